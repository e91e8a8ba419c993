// The checks of raw rows on their first reads since open (Spec/GUARANTEES.md), in C: a reduce
// over rows the process has not read before checks each against its checksum, and in Swift the
// bookkeeping around each hash cost more than the hash itself (retains, calls, a locked bitmap
// update a row that keeps the processor from hashing the next row while one is in flight).
#ifndef PKM_ROW_CHECK_H
#define PKM_ROW_CHECK_H

#include "gather_kernel.h"

/// XXH64 of `length` bytes at `p` with `seed` (Spec/FORMAT.md, "Checksums").
uint64_t pkm_xxh64(const void *p, size_t length, uint64_t seed);

/// The checks of raw rows (Spec/GUARANTEES.md, "Row checks") of the table `map` describes
/// (map->checked not NULL: the bitmap of groups checked since open), in units of
/// 2^map->group_shift rows (one group each), row j of a unit at `rows_offset` + j x map->row_bytes
/// from the unit's start and its checksum, the little-endian XXH64 of its bytes with the row's
/// table index as seed, at `checksums_offset` + j x 8 (Spec/FORMAT.md, "Raw"). For k in
/// 0 ..< count, with p = positions ? positions[k] : k, row indices[p] at rows[p]: nothing when its
/// group's bit in map->checked is set; when the group's bit in `touched` is clear (the group's
/// first read), the row alone is compared with its checksum and the bit set; when it is set, the
/// group's rows all are, and its bit in map->checked set (adding 1 to *newly_checked when this
/// call set it). Stops at the first row whose comparison failed, for the caller to find which
/// row failed and report it, returning its k; returns count when every row was handled. The
/// checksum lines (the whole group, for a touched one) `ahead` rows on are prefetched. A bit of
/// `touched` set by another thread at the same moment may be lost (it is set with a plain atomic
/// store, not a locked update): that group's next read then checks one row alone again.
size_t pkm_check_rows(const pkm_row_map *map, const intptr_t *indices, const intptr_t *positions, size_t count,
                      const void *const *rows, size_t rows_offset, size_t checksums_offset, uint64_t *touched,
                      size_t ahead, size_t *newly_checked);

#endif
