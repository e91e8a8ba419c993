// The fused gather-reduce at the heart of a lookup (Spec/RETRIEVAL.md, "Output"): weighted
// sums of value rows picked at random from a large table. Written in C because it must run at
// the memory system's limit: it keeps many cache misses in flight with explicit prefetches,
// and picks AVX-512 or AVX2/FMA/F16C code at run time, neither of which Swift code compiled
// for baseline x86-64 can do. It holds no state and allocates nothing.
#ifndef PKM_GATHER_KERNEL_H
#define PKM_GATHER_KERNEL_H

#include <stddef.h>
#include <stdint.h>

/// Element types, with the codes of Spec/FORMAT.md's shard headers.
enum { PKM_ELEMENT_F32 = 1, PKM_ELEMENT_F16 = 2, PKM_ELEMENT_BF16 = 3 };

/// For k in 0 ..< count, with i = positions ? positions[k] : k and row the `dim` elements of
/// `element_type` at rows[k]:
///     out[targets[i] * dim + t * w + j] += weights[i * chunks + t] * row[t * w + j]
/// for every chunk t < chunks and j < w = dim / chunks (`targets` NULL: every row adds into
/// out[0 ..< dim]). Accumulation is in float; runs of consecutive rows with the same target
/// are summed in registers and stored once. Rows `prefetch_distance` ahead are prefetched
/// (0: none). `half_table` maps each of the 65,536 f16 bit patterns to float (used only for
/// f16 on processors without F16C).
void pkm_gather_reduce(int element_type, const void *const *rows, const intptr_t *positions, size_t count,
                       size_t dim, size_t chunks, const float *weights, const intptr_t *targets, float *out,
                       size_t prefetch_distance, const float *half_table);

/// For k in 0 ..< count, with i = positions ? positions[k] : k and row the elements of
/// `element_type` at rows[k]:
///     out[i] = sum over j < width of inputs[queries[i] * width + j] * row[column + j]
/// summed in float, in an order that depends on the code path (the per-slot gate of
/// Spec/RETRIEVAL.md, "Gates"; AVX2 where the processor has it). The whole
/// `row_bytes` of rows `prefetch_distance` ahead are prefetched (0: none), so that a reduce of
/// the same rows after this call finds them in cache. `half_table` as for pkm_gather_reduce.
void pkm_gather_dot(int element_type, const void *const *rows, const intptr_t *positions, size_t count, size_t column,
                    size_t width, const float *inputs, const intptr_t *queries, float *out, size_t prefetch_distance,
                    size_t row_bytes, const float *half_table);

/// Where the rows of a table lie, for pkm_gather_reduce_rows. Flat (`shard_rows` NULL): row r
/// at base + r x row_bytes. Sharded (Spec/FORMAT.md, "Raw"): with s = r / rows_per_shard (the
/// high word of shard_multiplier x r when shard_multiplier is not 0, for r < 2^32; else a
/// division) and i = r - s x rows_per_shard, row r at shard_rows[s] + row_offsets[i]; every
/// shard_rows[s] (read with relaxed atomic loads) must be known (not 0). When `checked` is not
/// NULL, row r's group is checked when bit (s << checked_shift) + (i >> group_shift) of it is
/// set (read with relaxed atomic loads). Indices must be below `rows`: the kernels that locate
/// rows refuse any other (see pkm_gather_reduce_rows).
///
/// A nibble table's escaped rows (Spec/FORMAT.md, "Nibble"), which the nibble kernel only asks
/// for, for its caller to add: when `escape_rows` is not NULL, escape_rows[s] (read with relaxed
/// atomic loads; 0 while not known) is the address of shard s's first escaped row, s found as
/// above also for a flat map of slots, and an escaped slot's u32 at byte 4 the index of its row
/// there. When `escapes_checked` is not NULL, it is a bitmap laid out as `checked`, whose word
/// for the row's group is asked for too.
typedef struct {
    const char *base;
    size_t row_bytes;
    const intptr_t *shard_rows;
    size_t rows_per_shard;
    uint64_t shard_multiplier;
    const uint32_t *row_offsets;
    const uint64_t *checked;
    unsigned checked_shift, group_shift;
    size_t rows;
    const intptr_t *escape_rows;
    const uint64_t *escapes_checked;
} pkm_row_map;

/// The shard holding row r of the table `map` describes (see pkm_row_map).
static inline uint64_t pkm_row_shard(const pkm_row_map *map, uint64_t r) {
    return map->shard_multiplier ? (uint64_t)(((unsigned __int128)map->shard_multiplier * r) >> 64) : r / map->rows_per_shard;
}

/// The bit of map->checked for row i of shard s.
static inline uint64_t pkm_group_bit(const pkm_row_map *map, uint64_t s, size_t i) {
    return (s << map->checked_shift) + (i >> map->group_shift);
}

/// pkm_gather_reduce over the rows indices[0 ..< count] of the table `map` describes, each row
/// located as the kernel asks for its cache lines (`prefetch_distance` rows ahead), so that the
/// address arithmetic overlaps the loads in flight: for k < count, rows[k] becomes row
/// indices[k]'s address (`rows` holds count entries). Returns the number n of rows whose group's
/// bit is clear, their k in unchecked[0 ..< n] in order (`unchecked` holds count entries); they
/// are summed like the others, for the caller to check before it uses the sums. The bounds are
/// checked on the way, where the indices and targets are read anyway: when an index is not
/// below map->rows or a target not below `outputs` (the rows of `out`), the call returns
/// SIZE_MAX, for the caller to report the error; it reads and writes nothing outside the table
/// and `out` (the sums are then not to be used).
size_t pkm_gather_reduce_rows(int element_type, const pkm_row_map *map, const intptr_t *indices, size_t count, size_t dim,
                              size_t chunks, const float *weights, const intptr_t *targets, float *out, size_t outputs,
                              size_t prefetch_distance, const float *half_table, const void **rows, intptr_t *unchecked);

/// pkm_gather_reduce_rows with the path limited to `level`, for tests.
size_t pkm_gather_reduce_rows_at(int level, int element_type, const pkm_row_map *map, const intptr_t *indices, size_t count,
                                 size_t dim, size_t chunks, const float *weights, const intptr_t *targets, float *out,
                                 size_t outputs, size_t prefetch_distance, const float *half_table, const void **rows,
                                 intptr_t *unchecked);

/// The largest of values[0 ..< count] as unsigned (negatives as huge), 0 for none: the bounds
/// check of a batch of indices in one pass, four values a step where the processor has AVX2
/// (baseline x86-64 has no 64-bit compare for a compiler to vectorise the loop with).
uint64_t pkm_largest_unsigned(const intptr_t *values, size_t count);

/// Locates rows indices[0 ..< count] of the sharded table `map` describes, in order, into
/// rows[k], while their shards are known: stops at the first row whose shard_rows entry is 0 and
/// returns its k (count when every shard is known). When map->checked is not NULL, adds to
/// *unchecked the number of located rows whose group's bit is clear. The caller has checked
/// every index.
size_t pkm_locate_rows(const pkm_row_map *map, const intptr_t *indices, size_t count, size_t *unchecked, const void **rows);

/// Decodes rows of the nibble codec (Spec/FORMAT.md, "Nibble"): for k in 0 ..< count, the slot
/// at slots[k] (`dim` elements of `element_size` bytes, 2 or 4: (dim + 1) / 2 bytes of 4-bit
/// codes, element i's in byte i / 2, the low nibble for even i, then each element's lower
/// element_size - 1 bytes) becomes row k at out + k x dim x element_size, each element's top
/// byte table[code] (`table` holds 16 bytes; code 15 never occurs in a coded row). Stops at the
/// first escaped slot (first byte 0xFF), which it leaves to the caller, and returns its k (count
/// when none is). Slots `prefetch_distance` ahead are prefetched (0: none).
size_t pkm_nibble_decode(const void *const *slots, size_t count, size_t dim, size_t element_size, const uint8_t *table,
                         void *out, size_t prefetch_distance);

/// pkm_nibble_decode with the path limited to `level` (PKM_KERNEL_PORTABLE or better), for tests.
size_t pkm_nibble_decode_at(int level, const void *const *slots, size_t count, size_t dim, size_t element_size,
                            const uint8_t *table, void *out, size_t prefetch_distance);

/// pkm_gather_reduce over nibble slots of bf16 rows (Spec/FORMAT.md, "Nibble"), decoding each
/// row in registers as it is summed: for k in 0 ..< count with row k the slot at slots[k]
/// decoded with the 16-byte `table`, the sums of pkm_gather_reduce, except that escaped slots
/// (first byte 0xFF) are not added: their k go to escaped[0 ..< n], in order (`escaped` holds
/// count entries), and n is returned, for the caller to add those rows (each of a run's coded
/// rows is added before them). Needs AVX2 and dim a multiple of 32 and of 8 x chunks
/// (pkm_nibble_gather_reduce_fits); slots `prefetch_distance` ahead are prefetched.
size_t pkm_nibble_gather_reduce(const void *const *slots, const intptr_t *positions, size_t count, size_t dim,
                                size_t chunks, const float *weights, const intptr_t *targets, float *out,
                                size_t prefetch_distance, const uint8_t *table, intptr_t *escaped);

/// pkm_nibble_gather_reduce with the path limited to `level` (PKM_KERNEL_AVX2 or better), for tests.
size_t pkm_nibble_gather_reduce_at(int level, const void *const *slots, const intptr_t *positions, size_t count, size_t dim,
                                   size_t chunks, const float *weights, const intptr_t *targets, float *out,
                                   size_t prefetch_distance, const uint8_t *table, intptr_t *escaped);

/// pkm_nibble_gather_reduce over the slots of rows indices[0 ..< count] of the nibble table `map`
/// describes, each located as its lines are asked for (as pkm_gather_reduce_rows): slots[k]
/// becomes row indices[k]'s slot (`slots` holds count entries); the rows of groups not yet
/// checked are summed, their k listed in unchecked[0 ..< *unchecked_count] (count entries), for
/// the caller to check; returns the number of escaped slots, listed in `escaped` as
/// pkm_nibble_gather_reduce lists them (each escaped row, and its word of map->escapes_checked,
/// asked for as its slot is met, so that the caller finds them in cache), or SIZE_MAX when an
/// index or target was refused (as by pkm_gather_reduce_rows). Needs pkm_nibble_gather_reduce_fits.
size_t pkm_nibble_gather_reduce_rows(const pkm_row_map *map, const intptr_t *indices, size_t count, size_t dim, size_t chunks,
                                     const float *weights, const intptr_t *targets, float *out, size_t outputs,
                                     size_t prefetch_distance, const uint8_t *table, const void **slots, intptr_t *escaped,
                                     intptr_t *unchecked, size_t *unchecked_count);

/// pkm_nibble_gather_reduce_rows with the path limited to `level` (PKM_KERNEL_AVX2 or better), for tests.
size_t pkm_nibble_gather_reduce_rows_at(int level, const pkm_row_map *map, const intptr_t *indices, size_t count, size_t dim,
                                        size_t chunks, const float *weights, const intptr_t *targets, float *out, size_t outputs,
                                        size_t prefetch_distance, const uint8_t *table, const void **slots, intptr_t *escaped,
                                        intptr_t *unchecked, size_t *unchecked_count);

/// Whether pkm_nibble_gather_reduce runs on this processor for rows of `dim` in `chunks`.
int pkm_nibble_gather_reduce_fits(size_t dim, size_t chunks);

/// The locality of pkm_prefetch (`__builtin_prefetch`'s third argument): 1, into the second
/// level (`prefetcht2`). Against 3 (`prefetcht0`, the first level), the same rows in one process
/// (`bash Tools/prefetch_hint.sh`, BENCHMARKS.md "Prefetch hint"), on this project's AMD EPYC
/// (Zen 4) VM, 2026-12-06: even in cache (t0 1.03x at 2^16 rows), 1.7-2.1x faster from memory
/// (2^18-2^24: a prefetch into the first level holds one of its few miss buffers until the line
/// arrives, so fewer rows are in flight). An earlier host (2026-12-02) had t0 ahead by
/// 1.07-1.18x in cache and even from memory. Defined here so that a measurement can build the
/// kernel with another.
#ifndef PKM_PREFETCH_LOCALITY
#define PKM_PREFETCH_LOCALITY 1
#endif

/// Asks the processor to bring the cache lines of `bytes` bytes at `p` into its caches: every
/// one for more than 128 bytes (rows need not start on a line: a row of version 4 spans three
/// lines for 128 bytes of values); up to 128 bytes, the first and the last byte's.
static inline void pkm_prefetch(const void *p, size_t bytes) {
    if (bytes <= 128) {
        // A row's first and last bytes: all of its lines when it spans at most two (rows of up to
        // 128 bytes on a 64-byte line, as the store keeps them), without the loop's bookkeeping.
        __builtin_prefetch(p, 0, PKM_PREFETCH_LOCALITY);
        __builtin_prefetch((const char *)p + bytes - 1, 0, PKM_PREFETCH_LOCALITY);
        return;
    }
    const uintptr_t start = (uintptr_t)p & ~(uintptr_t)63, end = (uintptr_t)p + bytes;
    for (uintptr_t a = start; a < end; a += 64) __builtin_prefetch((const void *)a, 0, PKM_PREFETCH_LOCALITY);
}

/// The code paths, each used where the row's chunks allow it (AVX-512: 16 floats a vector,
/// AVX2: 8) and the processor has it.
enum { PKM_KERNEL_PORTABLE = 0, PKM_KERNEL_AVX2 = 1, PKM_KERNEL_AVX512 = 2 };

/// The best path this processor runs: PKM_KERNEL_AVX512 (AVX512F, AVX512BW, AVX2, FMA, F16C),
/// PKM_KERNEL_AVX2 (AVX2, FMA, F16C) or PKM_KERNEL_PORTABLE.
int pkm_gather_reduce_level(void);

/// pkm_gather_reduce with the path limited to `level` (at most the processor's): for tests
/// and measurements of each path.
void pkm_gather_reduce_at(int level, int element_type, const void *const *rows, const intptr_t *positions, size_t count,
                          size_t dim, size_t chunks, const float *weights, const intptr_t *targets, float *out,
                          size_t prefetch_distance, const float *half_table);

/// pkm_gather_dot with the path limited to `level` (AVX2 and beyond, or portable), for tests.
void pkm_gather_dot_at(int level, int element_type, const void *const *rows, const intptr_t *positions, size_t count,
                       size_t column, size_t width, const float *inputs, const intptr_t *queries, float *out,
                       size_t prefetch_distance, size_t row_bytes, const float *half_table);

// MARK: Row checks (row_check.c)

// The checks of rows on their first reads since open (Spec/GUARANTEES.md), in C: a reduce over
// rows the process has not read before checks each against its checksum, and in Swift the
// bookkeeping around each hash cost more than the hash itself (retains, calls, a locked bitmap
// update a row that keeps the processor from hashing the next row while one is in flight).

/// XXH64 of `length` bytes at `p` with `seed` (Spec/FORMAT.md, "Checksums").
uint64_t pkm_xxh64(const void *p, size_t length, uint64_t seed);

/// Where a table's row checksums lie, and what they are of (Spec/FORMAT.md, "Raw" and "Nibble"):
/// within a shard, row i lies where the row map says, in unit i / unit_rows (units follow one
/// another every unit_bytes from the shard's first), its checksum at checksums_offset +
/// (i % unit_rows) x checksum_bytes from its unit's start. Raw rows (`nibble_table` NULL): the
/// little-endian XXH64 of the row's bytes with its table index as seed, 8 bytes. Nibble slots:
/// the low 32 bits of that of the slot decoded (pkm_nibble_decode with `nibble_table`, `dim`
/// elements of `element_size` bytes, into `scratch`, which holds dim x element_size bytes), 4
/// bytes; an escaped slot passes (its values are checked where they are read).
typedef struct {
    size_t unit_rows, unit_bytes, checksums_offset, checksum_bytes;
    const uint8_t *nibble_table;
    size_t dim, element_size;
    void *scratch;
} pkm_check_layout;

/// The row checks (Spec/GUARANTEES.md) of a raw or nibble table that `map` describes (every
/// shard known; map->checked not NULL: the bitmap of groups, of 2^map->group_shift rows, checked
/// since open) and `layout` places. For k in 0 ..< count, row r = indices[positions ? positions[k]
/// : k]: nothing when its group's bit in map->checked is set; when the group's bit in `touched` is
/// clear (the group's first read), row r alone is compared with its checksum and the bit set; when
/// it is set, the group's rows all are, and its bit in map->checked set (adding 1 to
/// *newly_checked when this call set it). Stops at the first row whose comparison failed, for the
/// caller to find which row failed and report it, returning its k; returns count when every row
/// was handled. The checksums (a touched group's rows too) `ahead` rows on are prefetched. A bit
/// of `touched` set by another thread at the same moment may be lost (it is set with a plain
/// atomic store, not a locked update): that group's next read then checks one row alone again.
size_t pkm_check_rows(const pkm_row_map *map, const pkm_check_layout *layout, const intptr_t *indices, const intptr_t *positions,
                      size_t count, uint64_t *touched, size_t ahead, size_t *newly_checked);

#endif
