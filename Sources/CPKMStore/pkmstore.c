// The C API is implemented in Swift (Sources/PKMStore, exported with @_cdecl); this target
// only carries its header, include/pkmstore.h, so that the Swift side uses the same structs.
#include "pkmstore.h"
