// The format's value types (TableLayout, Manifest, Tensor, ElementType, StoreError, ...) are
// part of this library's API: an embedder who imports MemoryStore sees them.
@_exported import MemoryFormat
