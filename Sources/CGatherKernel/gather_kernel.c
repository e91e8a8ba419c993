#include "gather_kernel.h"

#include <immintrin.h>
#include <string.h>

#define BLOCK 64  // columns accumulated in registers at once (8 AVX vectors)

static inline size_t element_size(int type) { return type == PKM_ELEMENT_F32 ? 4 : 2; }

/// The position of row k's weights and target.
static inline size_t position(const intptr_t *positions, size_t k) { return positions ? (size_t)positions[k] : k; }
static inline intptr_t target(const intptr_t *targets, const intptr_t *positions, size_t k) {
    return targets ? targets[position(positions, k)] : 0;
}

/// The end of the run of rows from k on that share row k's target t.
static inline size_t run_end_scalar(const intptr_t *targets, const intptr_t *positions, size_t k, size_t count, intptr_t t) {
    size_t end = k + 1;
    while (end < count && target(targets, positions, end) == t) end++;
    return end;
}

/// How a kernel finds its rows: given (rows[k]), or located through a pkm_row_map, flat,
/// sharded, or sharded with checked groups.
enum { ROWS_GIVEN = 0, ROWS_FLAT = 1, ROWS_SHARDED = 2, ROWS_CHECKED = 3 };

/// What a kernel that locates its rows (pkm_gather_reduce_rows) needs on the way: the table, the
/// indices, the number of output rows, the list of rows not yet checked, and whether an index or
/// target was refused. A kernel works on its own copy, which the compiler keeps in registers:
/// through a pointer, every row address stored would reload it.
typedef struct {
    pkm_row_map map;
    const intptr_t *indices;
    size_t outputs;
    intptr_t *unchecked;
    size_t n;
    int refused;
} locator;

/// Row indices[k]'s address in the table loc->map describes (its shard known), `how` saying which
/// kind of table it is; when its group is not yet checked, k goes to loc->unchecked[loc->n++]. An
/// index not below map.rows is refused (loc->refused set) and read as row 0, so that the loops
/// need no exit: the caller throws.
static inline __attribute__((always_inline)) const void *locate_row(const int how, locator *loc, size_t k) {
    const pkm_row_map *map = &loc->map;
    uint64_t r = (uint64_t)loc->indices[k];
    if (__builtin_expect(r >= map->rows, 0)) {
        loc->refused = 1;
        r = 0;
    }
    if (how == ROWS_FLAT) return map->base + r * map->row_bytes;
    const uint64_t s = pkm_row_shard(map, r);
    const size_t i = (size_t)(r - s * map->rows_per_shard);
    const char *base = (const char *)__atomic_load_n(&map->shard_rows[s], __ATOMIC_RELAXED);
    if (how == ROWS_CHECKED) {
        const uint64_t g = pkm_group_bit(map, s, i);
        if (!((__atomic_load_n(&map->checked[g >> 6], __ATOMIC_RELAXED) >> (g & 63)) & 1)) loc->unchecked[loc->n++] = (intptr_t)k;
    }
    return base + map->row_offsets[i];
}

/// The output row of the run starting at k, whose target is t: a target not below loc->outputs
/// is refused (loc->refused set) and summed into row 0, as locate_row does for an index.
static inline __attribute__((always_inline)) float *target_row(float *out, intptr_t t, size_t dim, locator *loc) {
    if (loc && __builtin_expect((size_t)t >= loc->outputs, 0)) {
        loc->refused = 1;
        t = 0;
    }
    return out + (size_t)t * dim;
}

/// The kind of table `map` is.
static int rows_kind(const pkm_row_map *map) {
    return !map->shard_rows ? ROWS_FLAT : map->checked ? ROWS_CHECKED : ROWS_SHARDED;
}

/// Calls FN(chunked, how, ...) with both as constants, so that the inlined kernel is specialised:
/// `how` a ROWS_ kind, `chunked` whether rows have more than one weight.
#define DISPATCH_ROWS(how, chunked, FN, ...)                                                                            \
    switch ((how) * 2 + ((chunked) != 0)) {                                                                             \
    case 0: FN(0, ROWS_GIVEN, __VA_ARGS__); break;                                                                      \
    case 1: FN(1, ROWS_GIVEN, __VA_ARGS__); break;                                                                      \
    case 2: FN(0, ROWS_FLAT, __VA_ARGS__); break;                                                                       \
    case 3: FN(1, ROWS_FLAT, __VA_ARGS__); break;                                                                       \
    case 4: FN(0, ROWS_SHARDED, __VA_ARGS__); break;                                                                    \
    case 5: FN(1, ROWS_SHARDED, __VA_ARGS__); break;                                                                    \
    case 6: FN(0, ROWS_CHECKED, __VA_ARGS__); break;                                                                    \
    default: FN(1, ROWS_CHECKED, __VA_ARGS__); break;                                                                   \
    }

/// Asks for the `bytes` of entry `at` of `list` (rows or slots), locating it first when the kernel
/// locates its rows (`located`): the prefetch takes the address computed, which is stored after
/// (read back from the list, the prefetch would wait for the store to forward it).
#define LOCATE_AND_PREFETCH(list, at, bytes)                                                                            \
    {                                                                                                                   \
        if (located) {                                                                                                  \
            const void *entry_ = locate_row(located, loc, (at));                                                        \
            pkm_prefetch(entry_, (bytes));                                                                              \
            (list)[at] = entry_;                                                                                        \
        } else {                                                                                                        \
            pkm_prefetch((list)[at], (bytes));                                                                          \
        }                                                                                                               \
    }

/// Asks for the cache lines of row r + distance (see LOCATE_AND_PREFETCH).
#define AHEAD(r) LOCATE_AND_PREFETCH(rows, (r) + distance, bytes)

/// Where the rows k ..< end that ask for row r + distance (AHEAD) stop: the first column block
/// prefetches (`prefetching`), up to the call's last `distance` rows, which have none to ask for.
/// A run is summed in two loops, rows that prefetch then the rest, so that neither tests per row.
static inline size_t prefetching_end(int prefetching, size_t k, size_t end, size_t count, size_t distance) {
    if (!prefetching || count <= distance) return k;
    const size_t last = count - distance;
    return end < last ? end : last > k ? last : k;
}

/// The two loops of a run's rows k ..< end, the statement given adding row r (see prefetching_end).
/// The first, where a run spends its time, takes two rows a turn: in cache the kernel is bound
/// by the operations it issues, and a turn's bookkeeping (the counter, the test, values reloaded
/// from the stack) is then paid once for two rows (BENCHMARKS.md, "eleventh session": 1.05-1.11x
/// at 2^16 rows; four rows a turn gained nothing more).
#define FOR_ROWS(...)                                                                                                   \
    {                                                                                                                   \
        const size_t ahead_end_ = prefetching_end(prefetching, k, end, count, distance);                               \
        size_t r = k;                                                                                                   \
        _Pragma("clang loop unroll_count(2)") for (; r < ahead_end_; r++) { AHEAD(r) __VA_ARGS__ }                     \
        for (; r < end; r++) { __VA_ARGS__ }                                                                            \
    }

// MARK: Portable path (compiled for the baseline instruction set; loops the compiler vectorises)

static inline float element(int type, const void *row, size_t j, const float *half_table) {
    switch (type) {
    case PKM_ELEMENT_F32: { float x; memcpy(&x, (const char *)row + 4 * j, 4); return x; }
    case PKM_ELEMENT_F16: { uint16_t h; memcpy(&h, (const char *)row + 2 * j, 2); return half_table[h]; }
    default: { uint16_t h; memcpy(&h, (const char *)row + 2 * j, 2); uint32_t u = (uint32_t)h << 16; float x; memcpy(&x, &u, 4); return x; }
    }
}

static void gather_reduce_portable(int type, const void *const *rows, const intptr_t *positions, size_t count, size_t dim,
                                   size_t chunks, const float *weights, const intptr_t *targets, float *out,
                                   size_t distance, const float *half_table) {
    const size_t width = dim / chunks, bytes = dim * element_size(type);
    float acc[BLOCK];
    for (size_t k = 0; k < count;) {
        const intptr_t t = target(targets, positions, k);
        const size_t end = run_end_scalar(targets, positions, k, count, t);
        float *o = out + (size_t)t * dim;
        for (size_t c0 = 0; c0 < dim; c0 += BLOCK) {
            const size_t cols = dim - c0 < BLOCK ? dim - c0 : BLOCK;
            memcpy(acc, o + c0, cols * sizeof(float));
            for (size_t r = k; r < end; r++) {
                if (c0 == 0 && distance && r + distance < count) pkm_prefetch(rows[r + distance], bytes);
                const float *w = weights + position(positions, r) * chunks;
                const void *row = rows[r];
                if (type == PKM_ELEMENT_BF16 && chunks == 1) {
                    const uint16_t *h = (const uint16_t *)row + c0;
                    const float wt = w[0];
                    for (size_t j = 0; j < cols; j++) {
                        uint32_t u = (uint32_t)h[j] << 16; float x; memcpy(&x, &u, 4);
                        acc[j] += wt * x;
                    }
                } else {
                    for (size_t j = 0; j < cols; j++) acc[j] += w[(c0 + j) / width] * element(type, row, c0 + j, half_table);
                }
            }
            memcpy(o + c0, acc, cols * sizeof(float));
        }
        k = end;
    }
}

// MARK: AVX2 + FMA + F16C path

#define AVX2 __attribute__((target("avx2,fma,f16c,bmi,bmi2")))
#define ALWAYS_INLINE inline __attribute__((always_inline))

/// run_end_scalar, comparing four targets at a time where they are in row order (no positions):
/// a scalar scan ahead of each run cost a tenth of the reduce's time in cache.
static ALWAYS_INLINE AVX2 size_t run_end(const intptr_t *targets, const intptr_t *positions, size_t k, size_t count, intptr_t t) {
    size_t end = k + 1;
    if (targets && !positions) {
        const __m256i v = _mm256_set1_epi64x(t);
        for (; end + 4 <= count; end += 4) {
            const __m256i same = _mm256_cmpeq_epi64(_mm256_loadu_si256((const __m256i *)(targets + end)), v);
            const int other = _mm256_movemask_pd(_mm256_castsi256_pd(same)) ^ 15;
            if (other) return end + (size_t)__builtin_ctz((unsigned)other);
        }
    }
    return end < count ? run_end_scalar(targets, positions, end - 1, count, t) : count;
}

/// Eight elements of `type` at `p` as floats.
static ALWAYS_INLINE AVX2 __m256 load8(const int type, const char *p) {
    switch (type) {
    case PKM_ELEMENT_F32: return _mm256_loadu_ps((const float *)p);
    case PKM_ELEMENT_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    default: return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
    }
}

/// A run of rows with one target over columns c0 ..< c0 + 64, the accumulators in registers.
/// Inlined into one copy per element type (and plain or chunked weights), so that neither is
/// tested per vector.
static ALWAYS_INLINE AVX2 void run_block64(const int type, const int chunked, const int located, const void **rows,
                                           const intptr_t *positions, size_t k, size_t end, size_t count, size_t c0,
                                           size_t chunks, size_t width, const float *weights, float *o, size_t distance,
                                           size_t bytes, locator *loc) {
    const size_t size = element_size(type);
    __m256 a0 = _mm256_loadu_ps(o + c0), a1 = _mm256_loadu_ps(o + c0 + 8), a2 = _mm256_loadu_ps(o + c0 + 16),
           a3 = _mm256_loadu_ps(o + c0 + 24), a4 = _mm256_loadu_ps(o + c0 + 32), a5 = _mm256_loadu_ps(o + c0 + 40),
           a6 = _mm256_loadu_ps(o + c0 + 48), a7 = _mm256_loadu_ps(o + c0 + 56);
    const int prefetching = c0 == 0 && distance != 0;
#define WEIGHT(w, v) (chunked ? _mm256_set1_ps((w)[(c0 + 8 * (v)) / width]) : _mm256_set1_ps((w)[0]))
#define ROW(r)                                                                                                          \
    {                                                                                                                   \
        const float *w = weights + position(positions, r) * chunks;                                                     \
        const char *p = (const char *)rows[r] + c0 * size;                                                              \
        a0 = _mm256_fmadd_ps(load8(type, p), WEIGHT(w, 0), a0);                                                         \
        a1 = _mm256_fmadd_ps(load8(type, p + 8 * size), WEIGHT(w, 1), a1);                                              \
        a2 = _mm256_fmadd_ps(load8(type, p + 16 * size), WEIGHT(w, 2), a2);                                             \
        a3 = _mm256_fmadd_ps(load8(type, p + 24 * size), WEIGHT(w, 3), a3);                                             \
        a4 = _mm256_fmadd_ps(load8(type, p + 32 * size), WEIGHT(w, 4), a4);                                             \
        a5 = _mm256_fmadd_ps(load8(type, p + 40 * size), WEIGHT(w, 5), a5);                                             \
        a6 = _mm256_fmadd_ps(load8(type, p + 48 * size), WEIGHT(w, 6), a6);                                             \
        a7 = _mm256_fmadd_ps(load8(type, p + 56 * size), WEIGHT(w, 7), a7);                                             \
    }
    FOR_ROWS(ROW(r))
#undef ROW
#undef WEIGHT
    _mm256_storeu_ps(o + c0, a0); _mm256_storeu_ps(o + c0 + 8, a1); _mm256_storeu_ps(o + c0 + 16, a2);
    _mm256_storeu_ps(o + c0 + 24, a3); _mm256_storeu_ps(o + c0 + 32, a4); _mm256_storeu_ps(o + c0 + 40, a5);
    _mm256_storeu_ps(o + c0 + 48, a6); _mm256_storeu_ps(o + c0 + 56, a7);
}

// MARK: AVX-512 path (AVX512F + AVX512BW; F16C for f16)

#define AVX512 __attribute__((target("avx512f,avx512bw,avx2,fma,f16c,bmi,bmi2")))

/// Sixteen elements of `type` at `p` as floats.
static ALWAYS_INLINE AVX512 __m512 load16(const int type, const char *p) {
    switch (type) {
    case PKM_ELEMENT_F32: return _mm512_loadu_ps((const float *)p);
    case PKM_ELEMENT_F16: return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
    default: return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
    }
}

/// run_block64_512 for bf16 rows, each 32 elements widened within 128-bit lanes by interleaving
/// them with zeros (one instruction a vector, where zero-extending across lanes and shifting takes
/// two): for a row's elements c0 ..< c0 + 64, lane j of v0 / v1 holds elements c0 + 8j ..< + 4 /
/// c0 + 8j + 4 ..< + 8, and v2 / v3 the same 32 on. The accumulators hold the block's columns in
/// that order, put there from the output's order and back once a run (BF16_LANE_ORDER,
/// BF16_COLUMN_ORDER); a row's weights are two vectors, lane j of the first taking the chunk of
/// column c0 + 16 (j / 2), of the second that of column c0 + 32 + 16 (j / 2) (a chunk is a
/// multiple of 16 columns wide).
static ALWAYS_INLINE AVX512 void run_block64_bf16_512(const int chunked, const int located, const void **rows,
                                                      const intptr_t *positions, size_t k, size_t end, size_t count, size_t c0,
                                                      size_t chunks, size_t width, const float *weights, float *o,
                                                      size_t distance, size_t bytes, locator *loc) {
    __m512 x0 = _mm512_loadu_ps(o + c0), x1 = _mm512_loadu_ps(o + c0 + 16), x2 = _mm512_loadu_ps(o + c0 + 32),
           x3 = _mm512_loadu_ps(o + c0 + 48);
    // Output order (x<j>: columns 16j ..< 16j + 16) to lane order, lane j of a0 being lane j % 2 * 2 of x<j / 2>.
    __m512 a0 = _mm512_shuffle_f32x4(x0, x1, 0x88), a1 = _mm512_shuffle_f32x4(x0, x1, 0xDD),
           a2 = _mm512_shuffle_f32x4(x2, x3, 0x88), a3 = _mm512_shuffle_f32x4(x2, x3, 0xDD);
    const __m512i zero = _mm512_setzero_si512();
    const int prefetching = c0 == 0 && distance != 0;
    const size_t chunk0 = c0 / width;
#define LANE_CHUNK(c) (int)((c) / width - chunk0)
    const __m512i chunks_a = _mm512_set_epi32(LANE_CHUNK(c0 + 16), LANE_CHUNK(c0 + 16), LANE_CHUNK(c0 + 16), LANE_CHUNK(c0 + 16),
                                              LANE_CHUNK(c0 + 16), LANE_CHUNK(c0 + 16), LANE_CHUNK(c0 + 16), LANE_CHUNK(c0 + 16),
                                              0, 0, 0, 0, 0, 0, 0, 0),
                  chunks_b = _mm512_set_epi32(LANE_CHUNK(c0 + 48), LANE_CHUNK(c0 + 48), LANE_CHUNK(c0 + 48), LANE_CHUNK(c0 + 48),
                                              LANE_CHUNK(c0 + 48), LANE_CHUNK(c0 + 48), LANE_CHUNK(c0 + 48), LANE_CHUNK(c0 + 48),
                                              LANE_CHUNK(c0 + 32), LANE_CHUNK(c0 + 32), LANE_CHUNK(c0 + 32), LANE_CHUNK(c0 + 32),
                                              LANE_CHUNK(c0 + 32), LANE_CHUNK(c0 + 32), LANE_CHUNK(c0 + 32), LANE_CHUNK(c0 + 32));
    const __mmask16 chunk_mask = (__mmask16)((1u << (LANE_CHUNK(c0 + 48) + 1)) - 1);
#undef LANE_CHUNK
#define ROW(r)                                                                                                          \
    {                                                                                                                   \
        const float *w = weights + position(positions, r) * chunks;                                                     \
        const char *p = (const char *)rows[r] + c0 * 2;                                                                 \
        const __m512i lo_ = _mm512_loadu_si512((const void *)p), hi_ = _mm512_loadu_si512((const void *)(p + 64));      \
        __m512 wa_, wb_;                                                                                                \
        if (chunked) {                                                                                                  \
            const __m512 ws_ = _mm512_maskz_loadu_ps(chunk_mask, w + chunk0);                                           \
            wa_ = _mm512_permutexvar_ps(chunks_a, ws_);                                                                 \
            wb_ = _mm512_permutexvar_ps(chunks_b, ws_);                                                                 \
        } else {                                                                                                        \
            wa_ = wb_ = _mm512_set1_ps(w[0]);                                                                           \
        }                                                                                                               \
        a0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, lo_)), wa_, a0);                           \
        a1 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, lo_)), wa_, a1);                           \
        a2 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, hi_)), wb_, a2);                           \
        a3 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, hi_)), wb_, a3);                           \
    }
    FOR_ROWS(ROW(r))
#undef ROW
    // Back to output order: x0 = lanes 0, 1 of a0 and of a1, interleaved.
    const __m512 t0 = _mm512_shuffle_f32x4(a0, a1, 0x44), t1 = _mm512_shuffle_f32x4(a0, a1, 0xEE),
                 t2 = _mm512_shuffle_f32x4(a2, a3, 0x44), t3 = _mm512_shuffle_f32x4(a2, a3, 0xEE);
    _mm512_storeu_ps(o + c0, _mm512_shuffle_f32x4(t0, t0, 0xD8)); _mm512_storeu_ps(o + c0 + 16, _mm512_shuffle_f32x4(t1, t1, 0xD8));
    _mm512_storeu_ps(o + c0 + 32, _mm512_shuffle_f32x4(t2, t2, 0xD8)); _mm512_storeu_ps(o + c0 + 48, _mm512_shuffle_f32x4(t3, t3, 0xD8));
}

/// As run_block64, in 16-float vectors. (Two rows at a time into two sets of accumulators measured
/// slower, in cache and beyond it.)
static ALWAYS_INLINE AVX512 void run_block64_512(const int type, const int chunked, const int located, const void **rows,
                                                 const intptr_t *positions, size_t k, size_t end, size_t count, size_t c0,
                                                 size_t chunks, size_t width, const float *weights, float *o, size_t distance,
                                                 size_t bytes, locator *loc) {
    if (type == PKM_ELEMENT_BF16) {
        run_block64_bf16_512(chunked, located, rows, positions, k, end, count, c0, chunks, width, weights, o, distance, bytes, loc);
        return;
    }
    const size_t size = element_size(type);
    __m512 a0 = _mm512_loadu_ps(o + c0), a1 = _mm512_loadu_ps(o + c0 + 16), a2 = _mm512_loadu_ps(o + c0 + 32),
           a3 = _mm512_loadu_ps(o + c0 + 48);
    const int prefetching = c0 == 0 && distance != 0;
#define WEIGHT(w, v) (chunked ? _mm512_set1_ps((w)[(c0 + 16 * (v)) / width]) : _mm512_set1_ps((w)[0]))
#define ROW(r)                                                                                                          \
    {                                                                                                                   \
        const float *w = weights + position(positions, r) * chunks;                                                     \
        const char *p = (const char *)rows[r] + c0 * size;                                                              \
        a0 = _mm512_fmadd_ps(load16(type, p), WEIGHT(w, 0), a0);                                                        \
        a1 = _mm512_fmadd_ps(load16(type, p + 16 * size), WEIGHT(w, 1), a1);                                            \
        a2 = _mm512_fmadd_ps(load16(type, p + 32 * size), WEIGHT(w, 2), a2);                                            \
        a3 = _mm512_fmadd_ps(load16(type, p + 48 * size), WEIGHT(w, 3), a3);                                            \
    }
    FOR_ROWS(ROW(r))
#undef ROW
#undef WEIGHT
    _mm512_storeu_ps(o + c0, a0); _mm512_storeu_ps(o + c0 + 16, a1);
    _mm512_storeu_ps(o + c0 + 32, a2); _mm512_storeu_ps(o + c0 + 48, a3);
}

/// The driver of one vector path (NAME: avx2 or avx512): runs of rows with one target, each
/// 64-column block summed in registers by BLOCK_FN, then the last columns one LANES-wide vector
/// at a time; one inlined copy per element type, plain or chunked weights, and rows given or
/// located on the way (`loc`, with rows[0 ..< distance] located by the caller).
#define DEFINE_PATH(NAME, TARGET, BLOCK_FN, LANES, VEC, LOADU, STOREU, FMADD, SET1, LOAD)                                 \
    static ALWAYS_INLINE TARGET void gather_reduce_##NAME##_typed(                                                        \
        const int type, const int chunked, const int located, const void **rows, const intptr_t *positions, size_t count, \
        size_t dim, size_t chunks, const float *weights, const intptr_t *targets, float *out, size_t distance,            \
        locator *loc) {                                                                                                    \
        /* Constants where the specialisation fixes them: fewer registers for the loops to keep. */                       \
        if (located) positions = NULL; /* the locating entry points take none */                                          \
        if (!chunked) chunks = 1;                                                                                          \
        const size_t width = dim / chunks, size = element_size(type), bytes = dim * size;                                  \
        locator own;                                                                                                       \
        if (located) {                                                                                                     \
            own = *loc;                                                                                                    \
            if (located >= ROWS_SHARDED) __builtin_assume(own.map.shard_multiplier != 0); /* gather_reduce_path */         \
        }                                                                                                                  \
        for (size_t k = 0; k < count;) {                                                                                   \
            const intptr_t t = target(targets, positions, k);                                                             \
            const size_t end = run_end(targets, positions, k, count, t);                                                   \
            float *o = target_row(out, t, dim, located ? &own : NULL);                                                     \
            size_t c0 = 0;                                                                                                 \
            for (; c0 + BLOCK <= dim; c0 += BLOCK)                                                                         \
                BLOCK_FN(type, chunked, located, rows, positions, k, end, count, c0, chunks, width, weights, o, distance,  \
                         bytes, &own);                                                                                     \
            for (; c0 < dim; c0 += LANES) {                                                                                \
                VEC a = LOADU(o + c0);                                                                                     \
                const int prefetching = c0 == 0 && distance != 0;                                                          \
                locator *loc = &own;                                                                                       \
                FOR_ROWS(a = FMADD(LOAD(type, (const char *)rows[r] + c0 * size),                                         \
                                   SET1(weights[position(positions, r) * chunks + c0 / width]), a);)                      \
                STOREU(o + c0, a);                                                                                         \
            }                                                                                                              \
            k = end;                                                                                                       \
        }                                                                                                                  \
        if (located) {                                                                                                     \
            loc->n = own.n;                                                                                                \
            loc->refused = own.refused;                                                                                    \
        }                                                                                                                  \
    }                                                                                                                      \
    static ALWAYS_INLINE TARGET void gather_reduce_##NAME##_by_type(                                                      \
        const int chunked, const int located, int type, const void **rows, const intptr_t *positions, size_t count,       \
        size_t dim, size_t chunks, const float *weights, const intptr_t *targets, float *out, size_t distance,            \
        locator *loc) {                                                                                                    \
        switch (type) {                                                                                                    \
        case PKM_ELEMENT_F32:                                                                                              \
            gather_reduce_##NAME##_typed(PKM_ELEMENT_F32, chunked, located, rows, positions, count, dim, chunks, weights,   \
                                         targets, out, distance, loc);                                                     \
            break;                                                                                                         \
        case PKM_ELEMENT_F16:                                                                                              \
            gather_reduce_##NAME##_typed(PKM_ELEMENT_F16, chunked, located, rows, positions, count, dim, chunks, weights,   \
                                         targets, out, distance, loc);                                                     \
            break;                                                                                                         \
        default:                                                                                                           \
            gather_reduce_##NAME##_typed(PKM_ELEMENT_BF16, chunked, located, rows, positions, count, dim, chunks, weights,  \
                                         targets, out, distance, loc);                                                     \
            break;                                                                                                         \
        }                                                                                                                  \
    }                                                                                                                      \
    static TARGET void gather_reduce_##NAME(int type, const void **rows, const intptr_t *positions, size_t count,         \
                                            size_t dim, size_t chunks, const float *weights, const intptr_t *targets,      \
                                            float *out, size_t distance, locator *loc) {                                   \
        DISPATCH_ROWS(loc ? rows_kind(&loc->map) : ROWS_GIVEN, chunks != 1, gather_reduce_##NAME##_by_type, type, rows,    \
                      positions, count, dim, chunks, weights, targets, out, distance, loc)                                 \
    }

DEFINE_PATH(avx2, AVX2, run_block64, 8, __m256, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_fmadd_ps, _mm256_set1_ps, load8)
DEFINE_PATH(avx512, AVX512, run_block64_512, 16, __m512, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_fmadd_ps, _mm512_set1_ps, load16)

static int cpu_level = -1;  // -1: not yet known; every thread that asks computes the same value

int pkm_gather_reduce_level(void) {
    int level = __atomic_load_n(&cpu_level, __ATOMIC_RELAXED);
    if (level < 0) {
        __builtin_cpu_init();
        const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") &&
                         __builtin_cpu_supports("bmi2");
        level = avx2 ? (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") ? PKM_KERNEL_AVX512 : PKM_KERNEL_AVX2)
                     : PKM_KERNEL_PORTABLE;
        __atomic_store_n(&cpu_level, level, __ATOMIC_RELAXED);
    }
    return level;
}

/// The chosen path over rows given (`loc` NULL) or located on the way.
static void gather_reduce_path(int level, int element_type, const void **rows, const intptr_t *positions, size_t count,
                               size_t dim, size_t chunks, const float *weights, const intptr_t *targets, float *out,
                               size_t prefetch_distance, const float *half_table, locator *loc) {
    if (level > pkm_gather_reduce_level()) level = pkm_gather_reduce_level();
    const size_t width = dim / chunks, bytes = dim * element_size(element_type);
    // The loops prefetch `prefetch_distance` rows ahead of the one they sum; ask for the first
    // ones here, all at once, so that a short call (a single query's 128 rows) does not wait
    // for them one miss at a time. The portable path, which does not locate rows, gets them all.
    const int vector = (level >= PKM_KERNEL_AVX512 && width % 16 == 0) || (level >= PKM_KERNEL_AVX2 && width % 8 == 0);
    // A sharded table whose shards are found by a division (rows beyond 2^32) has its rows
    // located here, all of them, so that the loops multiply.
    const int divides = loc && loc->map.shard_rows && !loc->map.shard_multiplier;
    const size_t first = loc && (!vector || prefetch_distance == 0 || divides) ? count : prefetch_distance;
    for (size_t k = 0; k < first && k < count; k++) {
        if (loc) rows[k] = locate_row(rows_kind(&loc->map), loc, k);
        pkm_prefetch(rows[k], bytes);
    }
    if (loc && first >= count) {
        // Every row located: the loops only sum, and the targets are checked here.
        for (size_t k = 0; k < count && !loc->refused; k++)
            if ((size_t)target(targets, NULL, k) >= loc->outputs) loc->refused = 1;
        if (loc->refused) return;
        loc = NULL;
    }
    if (level >= PKM_KERNEL_AVX512 && width % 16 == 0)
        gather_reduce_avx512(element_type, rows, positions, count, dim, chunks, weights, targets, out, prefetch_distance, loc);
    else if (level >= PKM_KERNEL_AVX2 && width % 8 == 0)
        gather_reduce_avx2(element_type, rows, positions, count, dim, chunks, weights, targets, out, prefetch_distance, loc);
    else
        gather_reduce_portable(element_type, rows, positions, count, dim, chunks, weights, targets, out, prefetch_distance,
                               half_table);
}

void pkm_gather_reduce_at(int level, int element_type, const void *const *rows, const intptr_t *positions, size_t count,
                          size_t dim, size_t chunks, const float *weights, const intptr_t *targets, float *out,
                          size_t prefetch_distance, const float *half_table) {
    if (count == 0 || dim == 0 || chunks == 0) return;
    // Rows given are only read (`loc` NULL).
    gather_reduce_path(level, element_type, (const void **)rows, positions, count, dim, chunks, weights, targets, out,
                       prefetch_distance, half_table, NULL);
}

void pkm_gather_reduce(int element_type, const void *const *rows, const intptr_t *positions, size_t count,
                       size_t dim, size_t chunks, const float *weights, const intptr_t *targets, float *out,
                       size_t prefetch_distance, const float *half_table) {
    pkm_gather_reduce_at(pkm_gather_reduce_level(), element_type, rows, positions, count, dim, chunks, weights, targets, out,
                         prefetch_distance, half_table);
}

size_t pkm_gather_reduce_rows_at(int level, int element_type, const pkm_row_map *map, const intptr_t *indices, size_t count,
                                 size_t dim, size_t chunks, const float *weights, const intptr_t *targets, float *out,
                                 size_t outputs, size_t prefetch_distance, const float *half_table, const void **rows,
                                 intptr_t *unchecked) {
    if (count == 0 || dim == 0 || chunks == 0) return 0;
    locator loc = {*map, indices, outputs, unchecked, 0, 0};
    gather_reduce_path(level, element_type, rows, NULL, count, dim, chunks, weights, targets, out, prefetch_distance,
                       half_table, &loc);
    return loc.refused ? SIZE_MAX : loc.n;
}

size_t pkm_gather_reduce_rows(int element_type, const pkm_row_map *map, const intptr_t *indices, size_t count, size_t dim,
                              size_t chunks, const float *weights, const intptr_t *targets, float *out, size_t outputs,
                              size_t prefetch_distance, const float *half_table, const void **rows, intptr_t *unchecked) {
    return pkm_gather_reduce_rows_at(pkm_gather_reduce_level(), element_type, map, indices, count, dim, chunks, weights, targets,
                                     out, outputs, prefetch_distance, half_table, rows, unchecked);
}

/// The gate dots, eight elements a step (the tail one at a time).
static AVX2 void gather_dot_avx2(int type, const void *const *rows, const intptr_t *positions, size_t count, size_t column,
                                 size_t width, const float *inputs, const intptr_t *queries, float *out, size_t distance,
                                 size_t row_bytes, const float *half_table) {
    const size_t size = element_size(type);
    for (size_t k = 0; k < count; k++) {
        if (distance && k + distance < count) pkm_prefetch(rows[k + distance], row_bytes);
        const size_t i = position(positions, k);
        const float *u = inputs + (size_t)queries[i] * width;
        const char *p = (const char *)rows[k] + column * size;
        __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
        size_t j = 0;
        for (; j + 16 <= width; j += 16) {
            a = _mm256_fmadd_ps(load8(type, p + j * size), _mm256_loadu_ps(u + j), a);
            b = _mm256_fmadd_ps(load8(type, p + (j + 8) * size), _mm256_loadu_ps(u + j + 8), b);
        }
        for (; j + 8 <= width; j += 8) a = _mm256_fmadd_ps(load8(type, p + j * size), _mm256_loadu_ps(u + j), a);
        a = _mm256_add_ps(a, b);
        __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
        float sum = _mm_cvtss_f32(h);
        for (; j < width; j++) sum += u[j] * element(type, rows[k], column + j, half_table);
        out[i] = sum;
    }
}

void pkm_gather_dot(int element_type, const void *const *rows, const intptr_t *positions, size_t count, size_t column,
                    size_t width, const float *inputs, const intptr_t *queries, float *out, size_t prefetch_distance,
                    size_t row_bytes, const float *half_table) {
    pkm_gather_dot_at(pkm_gather_reduce_level(), element_type, rows, positions, count, column, width, inputs, queries, out,
                      prefetch_distance, row_bytes, half_table);
}

void pkm_gather_dot_at(int level, int element_type, const void *const *rows, const intptr_t *positions, size_t count,
                       size_t column, size_t width, const float *inputs, const intptr_t *queries, float *out,
                       size_t prefetch_distance, size_t row_bytes, const float *half_table) {
    for (size_t k = 0; k < prefetch_distance && k < count; k++) pkm_prefetch(rows[k], row_bytes);
    if (level >= PKM_KERNEL_AVX2 && pkm_gather_reduce_level() >= PKM_KERNEL_AVX2) {
        gather_dot_avx2(element_type, rows, positions, count, column, width, inputs, queries, out, prefetch_distance,
                        row_bytes, half_table);
        return;
    }
    for (size_t k = 0; k < count; k++) {
        if (prefetch_distance && k + prefetch_distance < count) pkm_prefetch(rows[k + prefetch_distance], row_bytes);
        const size_t i = position(positions, k);
        const float *u = inputs + (size_t)queries[i] * width;
        float sum = 0;
        for (size_t j = 0; j < width; j++) sum += u[j] * element(element_type, rows[k], column + j, half_table);
        out[i] = sum;
    }
}

static AVX2 uint64_t largest_unsigned_avx2(const intptr_t *values, size_t count) {
    // Unsigned order is signed order with the sign bit flipped.
    const __m256i flip = _mm256_set1_epi64x(INT64_MIN);
    __m256i m = flip;  // 0, flipped
    size_t k = 0;
    for (; k + 4 <= count; k += 4) {
        const __m256i v = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(values + k)), flip);
        m = _mm256_blendv_epi8(m, v, _mm256_cmpgt_epi64(v, m));
    }
    int64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, _mm256_xor_si256(m, flip));
    uint64_t largest = 0;
    for (int i = 0; i < 4; i++) largest = (uint64_t)lanes[i] > largest ? (uint64_t)lanes[i] : largest;
    for (; k < count; k++) largest = (uint64_t)values[k] > largest ? (uint64_t)values[k] : largest;
    return largest;
}

uint64_t pkm_largest_unsigned(const intptr_t *values, size_t count) {
    if (pkm_gather_reduce_level() >= PKM_KERNEL_AVX2) return largest_unsigned_avx2(values, count);
    uint64_t largest = 0;
    for (size_t k = 0; k < count; k++) largest = (uint64_t)values[k] > largest ? (uint64_t)values[k] : largest;
    return largest;
}

size_t pkm_locate_rows(const pkm_row_map *map, const intptr_t *indices, size_t count, size_t *unchecked, const void **rows) {
    size_t clear = 0, k = 0;
    for (; k < count; k++) {
        const uint64_t r = (uint64_t)indices[k];
        const uint64_t s = pkm_row_shard(map, r);
        const intptr_t base = __atomic_load_n(&map->shard_rows[s], __ATOMIC_RELAXED);
        if (base == 0) break;
        const size_t i = (size_t)(r - s * map->rows_per_shard);
        rows[k] = (const char *)base + map->row_offsets[i];
        if (map->checked) {
            const uint64_t g = pkm_group_bit(map, s, i);
            clear += !((__atomic_load_n(&map->checked[g >> 6], __ATOMIC_RELAXED) >> (g & 63)) & 1);
        }
    }
    if (map->checked) *unchecked += clear;
    return k;
}

// MARK: Nibble rows

/// One slot, an element at a time.
static void nibble_decode_portable(const uint8_t *slot, size_t dim, size_t size, const uint8_t *table, uint8_t *row) {
    const uint8_t *rest = slot + (dim + 1) / 2;
    const size_t low = size - 1;
    for (size_t i = 0; i < dim; i++) {
        const uint8_t code = (slot[i >> 1] >> ((i & 1) * 4)) & 15;
        for (size_t b = 0; b < low; b++) row[i * size + b] = rest[i * low + b];
        row[i * size + low] = table[code];
    }
}

/// A bf16 slot, 32 elements a step: the codes looked up with a byte shuffle, the top bytes
/// interleaved with the low bytes (SSSE3, which every AVX2 processor has).
static AVX2 void nibble_decode_bf16_ssse3(const uint8_t *slot, size_t dim, __m128i table, uint8_t *row) {
    const uint8_t *low = slot + (dim + 1) / 2;
    const __m128i mask = _mm_set1_epi8(15);
    size_t i = 0;
    for (; i + 32 <= dim; i += 32) {
        const __m128i codes = _mm_loadu_si128((const __m128i *)(slot + i / 2));
        const __m128i even = _mm_shuffle_epi8(table, _mm_and_si128(codes, mask));
        const __m128i odd = _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(codes, 4), mask));
        const __m128i top0 = _mm_unpacklo_epi8(even, odd), top1 = _mm_unpackhi_epi8(even, odd);
        const __m128i low0 = _mm_loadu_si128((const __m128i *)(low + i)), low1 = _mm_loadu_si128((const __m128i *)(low + i + 16));
        __m128i *o = (__m128i *)(row + 2 * i);
        _mm_storeu_si128(o, _mm_unpacklo_epi8(low0, top0));
        _mm_storeu_si128(o + 1, _mm_unpackhi_epi8(low0, top0));
        _mm_storeu_si128(o + 2, _mm_unpacklo_epi8(low1, top1));
        _mm_storeu_si128(o + 3, _mm_unpackhi_epi8(low1, top1));
    }
    uint8_t t[16];
    _mm_storeu_si128((__m128i *)t, table);
    for (; i < dim; i++) {
        row[2 * i] = low[i];
        row[2 * i + 1] = t[(slot[i >> 1] >> ((i & 1) * 4)) & 15];
    }
}

static AVX2 size_t nibble_decode_avx2(const void *const *slots, size_t count, size_t dim, size_t size, const uint8_t *table,
                                      uint8_t *out, size_t distance, size_t slot_bytes) {
    const __m128i t = _mm_loadu_si128((const __m128i *)table);
    for (size_t k = 0; k < count; k++) {
        if (distance && k + distance < count) pkm_prefetch(slots[k + distance], slot_bytes);
        const uint8_t *slot = (const uint8_t *)slots[k];
        if (slot[0] == 0xFF) return k;
        if (size == 2) nibble_decode_bf16_ssse3(slot, dim, t, out + k * dim * 2);
        else nibble_decode_portable(slot, dim, size, table, out + k * dim * size);
    }
    return count;
}

size_t pkm_nibble_decode_at(int level, const void *const *slots, size_t count, size_t dim, size_t element_size,
                            const uint8_t *table, void *out, size_t prefetch_distance) {
    const size_t slot_bytes = (dim + 1) / 2 + (element_size - 1) * dim;
    for (size_t k = 0; k < prefetch_distance && k < count; k++) pkm_prefetch(slots[k], slot_bytes);
    if (level >= PKM_KERNEL_AVX2 && pkm_gather_reduce_level() >= PKM_KERNEL_AVX2)
        return nibble_decode_avx2(slots, count, dim, element_size, table, (uint8_t *)out, prefetch_distance, slot_bytes);
    for (size_t k = 0; k < count; k++) {
        if (prefetch_distance && k + prefetch_distance < count) pkm_prefetch(slots[k + prefetch_distance], slot_bytes);
        const uint8_t *slot = (const uint8_t *)slots[k];
        if (slot[0] == 0xFF) return k;
        nibble_decode_portable(slot, dim, element_size, table, (uint8_t *)out + k * dim * element_size);
    }
    return count;
}

size_t pkm_nibble_decode(const void *const *slots, size_t count, size_t dim, size_t element_size, const uint8_t *table,
                         void *out, size_t prefetch_distance) {
    return pkm_nibble_decode_at(pkm_gather_reduce_level(), slots, count, dim, element_size, table, out, prefetch_distance);
}

/// Eight bf16 values (16-bit lanes of v) as floats.
static ALWAYS_INLINE AVX2 __m256 widen_bf16(__m128i v) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
}

/// Four vectors of eight bf16 values, elements c0 ..< c0 + 32 of a nibble slot.
#define NIBBLE_DECODE32(slot, low, c0, v0, v1, v2, v3)                                                                  \
    do {                                                                                                                \
        const __m128i codes_ = _mm_loadu_si128((const __m128i *)((slot) + (c0) / 2));                                 \
        const __m128i even_ = _mm_shuffle_epi8(table, _mm_and_si128(codes_, mask));                                   \
        const __m128i odd_ = _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(codes_, 4), mask));                 \
        const __m128i top0_ = _mm_unpacklo_epi8(even_, odd_), top1_ = _mm_unpackhi_epi8(even_, odd_);                 \
        const __m128i low0_ = _mm_loadu_si128((const __m128i *)((low) + (c0)));                                       \
        const __m128i low1_ = _mm_loadu_si128((const __m128i *)((low) + (c0) + 16));                                  \
        v0 = widen_bf16(_mm_unpacklo_epi8(low0_, top0_)); v1 = widen_bf16(_mm_unpackhi_epi8(low0_, top0_));           \
        v2 = widen_bf16(_mm_unpacklo_epi8(low1_, top1_)); v3 = widen_bf16(_mm_unpackhi_epi8(low1_, top1_));           \
    } while (0)

/// Asks for the lines of slot r + distance while slot r is summed in the first column block
/// (see LOCATE_AND_PREFETCH).
#define NIBBLE_AHEAD(r)                                                                                                 \
    if (first && distance && (r) + distance < count) LOCATE_AND_PREFETCH(slots, (r) + distance, slot_bytes)

/// Asks for the slots of the 16 rows from r + distance on when r is a multiple of 16, for the AVX2
/// loops: their decode (128-bit shuffles) is long enough that, asked for a row at a time, few
/// slots' misses are in flight at once; asked for 16 at once they overlap (1.9x at 2^26 rows,
/// 0.93x in cache: BENCHMARKS.md, "fifteenth session"). The first block meets every row once, so
/// each slot is located at least `distance` rows before it is summed.
#define NIBBLE_WINDOW(r)                                                                                                \
    if (first && distance && ((r) & 15) == 0)                                                                           \
        for (size_t a_ = (r) + distance; a_ < (r) + distance + 16 && a_ < count; a_++) LOCATE_AND_PREFETCH(slots, a_, slot_bytes)

/// Asks for the escaped row that slot k (escaped, at `slot`) points to, and for its group's word
/// of escapes_checked (see pkm_row_map), so that the caller, which adds it after the call, finds
/// them in cache rather than waiting for memory a row at a time. Only asks: a damaged index (which
/// the caller refuses) names a wrong line, nothing more.
static inline __attribute__((always_inline)) void prefetch_escaped(const locator *loc, size_t k, const uint8_t *slot, size_t row_bytes) {
    const pkm_row_map *map = &loc->map;
    const uint64_t r = (uint64_t)loc->indices[k];
    if (!map->escape_rows || !map->rows_per_shard || r >= map->rows) return;  // a refused index was read as row 0
    const uint64_t s = pkm_row_shard(map, r);
    const char *first = (const char *)__atomic_load_n(&map->escape_rows[s], __ATOMIC_RELAXED);
    if (!first) return;
    uint32_t index;
    memcpy(&index, slot + 4, 4);
    pkm_prefetch(first + (size_t)index * row_bytes, row_bytes);
    if (map->escapes_checked) pkm_prefetch(&map->escapes_checked[pkm_group_bit(map, s, (size_t)(r - s * map->rows_per_shard)) >> 6], 8);
}

/// Lists escaped slot k (first byte 0xFF) in escaped[(*escapes)++], for the caller to add, asking
/// for its row when the kernel locates its slots.
#define NIBBLE_ESCAPED(slot, k)                                                                                         \
    {                                                                                                                   \
        escaped[(*escapes)++] = (intptr_t)(k);                                                                          \
        if (located) prefetch_escaped(loc, (k), (slot), dim * 2);                                                       \
    }

/// Escaped slots are skipped by every block; the first block (c0 == 0) lists them (NIBBLE_ESCAPED).
#define NIBBLE_SKIP(slot, r)                                                                                            \
    if ((slot)[0] == 0xFF) {                                                                                            \
        if (first) NIBBLE_ESCAPED(slot, r)                                                                              \
        continue;                                                                                                       \
    }

/// A run of rows with one target over columns c0 ..< c0 + 32 of nibble slots: codes looked up
/// with a byte shuffle, interleaved with the low bytes, widened and summed in four accumulators.
static ALWAYS_INLINE AVX2 void nibble_run_block32(const int chunked, const int located, const void **slots, const intptr_t *positions,
                                                  size_t k, size_t end, size_t count, size_t c0, size_t dim,
                                                  size_t chunks, size_t width, const float *weights, float *o,
                                                  size_t distance, size_t slot_bytes, __m128i table, intptr_t *escaped,
                                                  size_t *escapes, locator *loc) {
    const __m128i mask = _mm_set1_epi8(15);
    __m256 a0 = _mm256_loadu_ps(o + c0), a1 = _mm256_loadu_ps(o + c0 + 8), a2 = _mm256_loadu_ps(o + c0 + 16),
           a3 = _mm256_loadu_ps(o + c0 + 24);
    const int first = c0 == 0;
    for (size_t r = k; r < end; r++) {
        NIBBLE_WINDOW(r)
        const uint8_t *slot = (const uint8_t *)slots[r];
        NIBBLE_SKIP(slot, r)
        const float *w = weights + position(positions, r) * chunks;
        __m256 v0, v1, v2, v3;
        NIBBLE_DECODE32(slot, slot + dim / 2, c0, v0, v1, v2, v3);
#define WEIGHT(v) (chunked ? _mm256_set1_ps(w[(c0 + 8 * (v)) / width]) : wt)
        const __m256 wt = _mm256_set1_ps(w[0]);
        a0 = _mm256_fmadd_ps(v0, WEIGHT(0), a0); a1 = _mm256_fmadd_ps(v1, WEIGHT(1), a1);
        a2 = _mm256_fmadd_ps(v2, WEIGHT(2), a2); a3 = _mm256_fmadd_ps(v3, WEIGHT(3), a3);
#undef WEIGHT
    }
    _mm256_storeu_ps(o + c0, a0); _mm256_storeu_ps(o + c0 + 8, a1);
    _mm256_storeu_ps(o + c0 + 16, a2); _mm256_storeu_ps(o + c0 + 24, a3);
}

/// As nibble_run_block32 over columns c0 ..< c0 + 64, in eight accumulators.
static ALWAYS_INLINE AVX2 void nibble_run_block64(const int chunked, const int located, const void **slots, const intptr_t *positions,
                                                  size_t k, size_t end, size_t count, size_t c0, size_t dim,
                                                  size_t chunks, size_t width, const float *weights, float *o,
                                                  size_t distance, size_t slot_bytes, __m128i table, intptr_t *escaped,
                                                  size_t *escapes, locator *loc) {
    const __m128i mask = _mm_set1_epi8(15);
    __m256 a0 = _mm256_loadu_ps(o + c0), a1 = _mm256_loadu_ps(o + c0 + 8), a2 = _mm256_loadu_ps(o + c0 + 16),
           a3 = _mm256_loadu_ps(o + c0 + 24), a4 = _mm256_loadu_ps(o + c0 + 32), a5 = _mm256_loadu_ps(o + c0 + 40),
           a6 = _mm256_loadu_ps(o + c0 + 48), a7 = _mm256_loadu_ps(o + c0 + 56);
    const int first = c0 == 0;
    for (size_t r = k; r < end; r++) {
        NIBBLE_WINDOW(r)
        const uint8_t *slot = (const uint8_t *)slots[r];
        NIBBLE_SKIP(slot, r)
        const float *w = weights + position(positions, r) * chunks;
        const uint8_t *low = slot + dim / 2;
        __m256 v0, v1, v2, v3, v4, v5, v6, v7;
        NIBBLE_DECODE32(slot, low, c0, v0, v1, v2, v3);
        NIBBLE_DECODE32(slot, low, c0 + 32, v4, v5, v6, v7);
#define WEIGHT(v) (chunked ? _mm256_set1_ps(w[(c0 + 8 * (v)) / width]) : wt)
        const __m256 wt = _mm256_set1_ps(w[0]);
        a0 = _mm256_fmadd_ps(v0, WEIGHT(0), a0); a1 = _mm256_fmadd_ps(v1, WEIGHT(1), a1);
        a2 = _mm256_fmadd_ps(v2, WEIGHT(2), a2); a3 = _mm256_fmadd_ps(v3, WEIGHT(3), a3);
        a4 = _mm256_fmadd_ps(v4, WEIGHT(4), a4); a5 = _mm256_fmadd_ps(v5, WEIGHT(5), a5);
        a6 = _mm256_fmadd_ps(v6, WEIGHT(6), a6); a7 = _mm256_fmadd_ps(v7, WEIGHT(7), a7);
#undef WEIGHT
    }
    _mm256_storeu_ps(o + c0, a0); _mm256_storeu_ps(o + c0 + 8, a1); _mm256_storeu_ps(o + c0 + 16, a2);
    _mm256_storeu_ps(o + c0 + 24, a3); _mm256_storeu_ps(o + c0 + 32, a4); _mm256_storeu_ps(o + c0 + 40, a5);
    _mm256_storeu_ps(o + c0 + 48, a6); _mm256_storeu_ps(o + c0 + 56, a7);
}

/// Elements c0 ..< c0 + 64 of a nibble slot as four vectors of sixteen floats, in lane order
/// (AVX-512BW): 128-bit lane j of v<m> holds elements c0 + 16j + 4m ..< c0 + 16j + 4m + 4. Each
/// code byte is widened to a word and its high nibble moved to the word's high byte, so that one
/// byte shuffle looks up the 64 top bytes in element order; interleaving them with the low bytes
/// gives the bf16 values, and interleaving those with zeros the floats, all within lanes (no
/// lane crossing, which the order of the elements would need).
#define NIBBLE_DECODE64_LANES(slot, low, c0, v0, v1, v2, v3)                                                            \
    do {                                                                                                                \
        const __m512i words_ = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)((slot) + (c0) / 2)));        \
        /* (words | words << 4) & 0x0F0F: element 2i's code in byte 2i, element 2i + 1's in byte 2i + 1 */             \
        const __m512i codes_ = _mm512_ternarylogic_epi64(words_, _mm512_slli_epi16(words_, 4), nibbles, 0xA8);        \
        const __m512i top_ = _mm512_shuffle_epi8(table4, codes_);                                                     \
        const __m512i low_ = _mm512_loadu_si512((const void *)((low) + (c0)));                                        \
        const __m512i h0_ = _mm512_unpacklo_epi8(low_, top_), h1_ = _mm512_unpackhi_epi8(low_, top_);                 \
        v0 = _mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, h0_));                                                   \
        v1 = _mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, h0_));                                                   \
        v2 = _mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, h1_));                                                   \
        v3 = _mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, h1_));                                                   \
    } while (0)

/// Exchanges lane m of x<j> with lane j of x<m> (a 4 x 4 transpose of 128-bit lanes): the 64
/// columns of an output block between element order (x<j> holding columns 16j ..< 16j + 16) and
/// NIBBLE_DECODE64_LANES's lane order, either way.
#define TRANSPOSE_LANES(x0, x1, x2, x3)                                                                                 \
    do {                                                                                                                \
        const __m512 t0_ = _mm512_shuffle_f32x4(x0, x1, 0x44), t1_ = _mm512_shuffle_f32x4(x0, x1, 0xEE);              \
        const __m512 t2_ = _mm512_shuffle_f32x4(x2, x3, 0x44), t3_ = _mm512_shuffle_f32x4(x2, x3, 0xEE);              \
        x0 = _mm512_shuffle_f32x4(t0_, t2_, 0x88); x1 = _mm512_shuffle_f32x4(t0_, t2_, 0xDD);                          \
        x2 = _mm512_shuffle_f32x4(t1_, t3_, 0x88); x3 = _mm512_shuffle_f32x4(t1_, t3_, 0xDD);                          \
    } while (0)

/// As nibble_run_block64 in 16-float vectors, two rows at a time into two sets of accumulators,
/// so that one row's code lookups overlap the other's multiply-adds; a pair with an escaped slot
/// adds its coded row alone. The accumulators hold the block's columns in lane order
/// (NIBBLE_DECODE64_LANES), so a row's weights are one vector: lane j's chunk is that of
/// column c0 + 16j (a chunk is a multiple of 16 columns wide).
static ALWAYS_INLINE AVX512 void nibble_run_block64_512(const int chunked, const int located, const void **slots, const intptr_t *positions,
                                                        size_t k, size_t end, size_t count, size_t c0, size_t dim,
                                                        size_t chunks, size_t width, const float *weights, float *o,
                                                        size_t distance, size_t slot_bytes, __m128i table, intptr_t *escaped,
                                                        size_t *escapes, locator *loc) {
    const __m512i table4 = _mm512_broadcast_i32x4(table), nibbles = _mm512_set1_epi16(0x0F0F), zero = _mm512_setzero_si512();
    __m512 a0 = _mm512_loadu_ps(o + c0), a1 = _mm512_loadu_ps(o + c0 + 16), a2 = _mm512_loadu_ps(o + c0 + 32),
           a3 = _mm512_loadu_ps(o + c0 + 48);
    TRANSPOSE_LANES(a0, a1, a2, a3);
    __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps(), b2 = _mm512_setzero_ps(), b3 = _mm512_setzero_ps();
    const int first = c0 == 0;
    // Chunked: the row's weights from its chunk c0 / width on, lane j taking the one at (c0 + 16j) / width - c0 / width.
    const size_t chunk0 = c0 / width;
    const __m512i lane_chunk = _mm512_set_epi32(
        (int)((c0 + 48) / width - chunk0), (int)((c0 + 48) / width - chunk0), (int)((c0 + 48) / width - chunk0), (int)((c0 + 48) / width - chunk0),
        (int)((c0 + 32) / width - chunk0), (int)((c0 + 32) / width - chunk0), (int)((c0 + 32) / width - chunk0), (int)((c0 + 32) / width - chunk0),
        (int)((c0 + 16) / width - chunk0), (int)((c0 + 16) / width - chunk0), (int)((c0 + 16) / width - chunk0), (int)((c0 + 16) / width - chunk0),
        0, 0, 0, 0);
    const __mmask16 chunk_mask = (__mmask16)((1u << ((c0 + 48) / width - chunk0 + 1)) - 1);
#define WEIGHTS(w) (chunked ? _mm512_permutexvar_ps(lane_chunk, _mm512_maskz_loadu_ps(chunk_mask, (w) + chunk0)) : _mm512_set1_ps((w)[0]))
#define ADD_ROW(p, w, A0, A1, A2, A3)                                                                                   \
    do {                                                                                                                \
        __m512 v0_, v1_, v2_, v3_;                                                                                      \
        NIBBLE_DECODE64_LANES(p, (p) + dim / 2, c0, v0_, v1_, v2_, v3_);                                                \
        const __m512 wv_ = WEIGHTS(w);                                                                                  \
        A0 = _mm512_fmadd_ps(v0_, wv_, A0); A1 = _mm512_fmadd_ps(v1_, wv_, A1);                                         \
        A2 = _mm512_fmadd_ps(v2_, wv_, A2); A3 = _mm512_fmadd_ps(v3_, wv_, A3);                                         \
    } while (0)
#define ADD_PAIR(r)                                                                                                     \
    {                                                                                                                   \
        const uint8_t *p = (const uint8_t *)slots[r], *q = (const uint8_t *)slots[(r) + 1];                             \
        const float *w = weights + position(positions, r) * chunks, *x = weights + position(positions, (r) + 1) * chunks; \
        if (p[0] != 0xFF) ADD_ROW(p, w, a0, a1, a2, a3);                                                                \
        else if (first) NIBBLE_ESCAPED(p, r)                                                                            \
        if (q[0] != 0xFF) ADD_ROW(q, x, b0, b1, b2, b3);                                                                \
        else if (first) NIBBLE_ESCAPED(q, (r) + 1)                                                                      \
    }
    size_t r = k;
    // Where the run spends its time every row asks for one ahead, with no test a row (as
    // FOR_ROWS does): 1.02-1.05x in cache (Tools/kernel_ab.c's way, BENCHMARKS.md, twelfth session).
    const size_t ahead_end = prefetching_end(first && distance != 0, k, end, count, distance);
    for (; r + 1 < ahead_end; r += 2) {
        LOCATE_AND_PREFETCH(slots, r + distance, slot_bytes)
        LOCATE_AND_PREFETCH(slots, r + 1 + distance, slot_bytes)
        ADD_PAIR(r)
    }
    for (; r + 1 < end; r += 2) {
        NIBBLE_AHEAD(r)
        NIBBLE_AHEAD(r + 1)
        ADD_PAIR(r)
    }
#undef ADD_PAIR
    if (r < end) {
        NIBBLE_AHEAD(r)
        const uint8_t *p = (const uint8_t *)slots[r];
        const float *w = weights + position(positions, r) * chunks;
        if (p[0] != 0xFF) ADD_ROW(p, w, a0, a1, a2, a3);
        else if (first) NIBBLE_ESCAPED(p, r)
    }
#undef ADD_ROW
#undef WEIGHTS
    a0 = _mm512_add_ps(a0, b0); a1 = _mm512_add_ps(a1, b1); a2 = _mm512_add_ps(a2, b2); a3 = _mm512_add_ps(a3, b3);
    TRANSPOSE_LANES(a0, a1, a2, a3);
    _mm512_storeu_ps(o + c0, a0); _mm512_storeu_ps(o + c0 + 16, a1);
    _mm512_storeu_ps(o + c0 + 32, a2); _mm512_storeu_ps(o + c0 + 48, a3);
}

/// Sets `escapes` to FN's (a nibble reduce specialised by DISPATCH_ROWS) over the arguments of the
/// function it is used in. Rows of 64 values (the usual width) get a copy with the width a
/// constant: the slot's size, the one column block and its tests fold away, leaving fewer
/// instructions a row between the prefetches (with the positions dropped where the rows are
/// located: 1.04-1.2x, BENCHMARKS.md, "fifteenth session").
#define DISPATCH_NIBBLE(FN)                                                                                             \
    if (dim == 64) {                                                                                                    \
        DISPATCH_ROWS(loc ? rows_kind(&loc->map) : ROWS_GIVEN, chunks != 1, escapes = FN, slots, positions, count, 64,  \
                      chunks, weights, targets, out, distance, t, escaped, loc)                                         \
    } else {                                                                                                            \
        DISPATCH_ROWS(loc ? rows_kind(&loc->map) : ROWS_GIVEN, chunks != 1, escapes = FN, slots, positions, count, dim, \
                      chunks, weights, targets, out, distance, t, escaped, loc)                                         \
    }

static ALWAYS_INLINE AVX512 size_t nibble_reduce_512_typed(const int chunked, const int located, const void **slots, const intptr_t *positions,
                                                           size_t count, size_t dim, size_t chunks, const float *weights,
                                                           const intptr_t *targets, float *out, size_t distance, __m128i table,
                                                           intptr_t *escaped, locator *loc_in) {
    // Constants where the specialisation fixes them, as in gather_reduce's paths.
    if (located) positions = NULL;  // the locating entry point takes none
    if (!chunked) chunks = 1;
    const size_t width = dim / chunks, slot_bytes = dim / 2 + dim;
    size_t escapes = 0;
    locator own, *loc = &own;  // a copy the compiler keeps in registers (see locator)
    if (located) own = *loc_in;
    for (size_t k = 0; k < count;) {
        const intptr_t t = target(targets, positions, k);
        const size_t end = run_end(targets, positions, k, count, t);
        float *o = target_row(out, t, dim, located ? loc : NULL);
        for (size_t c0 = 0; c0 < dim; c0 += 64)
            nibble_run_block64_512(chunked, located, slots, positions, k, end, count, c0, dim, chunks, width, weights, o, distance,
                                   slot_bytes, table, escaped, &escapes, loc);
        k = end;
    }
    if (located) {
        loc_in->n = own.n;
        loc_in->refused = own.refused;
    }
    return escapes;
}

static AVX512 size_t nibble_reduce_avx512(const void **slots, const intptr_t *positions, size_t count, size_t dim,
                                          size_t chunks, const float *weights, const intptr_t *targets, float *out,
                                          size_t distance, const uint8_t *table, intptr_t *escaped, locator *loc) {
    const __m128i t = _mm_loadu_si128((const __m128i *)table);
    size_t escapes = 0;
    DISPATCH_NIBBLE(nibble_reduce_512_typed)
    return escapes;
}

static ALWAYS_INLINE AVX2 size_t nibble_reduce_typed(const int chunked, const int located, const void **slots, const intptr_t *positions,
                                                     size_t count, size_t dim, size_t chunks, const float *weights,
                                                     const intptr_t *targets, float *out, size_t distance, __m128i table,
                                                     intptr_t *escaped, locator *loc_in) {
    if (located) positions = NULL;  // as nibble_reduce_512_typed
    if (!chunked) chunks = 1;
    const size_t width = dim / chunks, slot_bytes = dim / 2 + dim;
    size_t escapes = 0;
    locator own, *loc = &own;  // a copy the compiler keeps in registers (see locator)
    if (located) own = *loc_in;
    for (size_t k = 0; k < count;) {
        const intptr_t t = target(targets, positions, k);
        const size_t end = run_end(targets, positions, k, count, t);
        float *o = target_row(out, t, dim, located ? loc : NULL);
        if (dim % 64 == 0) {
            for (size_t c0 = 0; c0 < dim; c0 += 64)
                nibble_run_block64(chunked, located, slots, positions, k, end, count, c0, dim, chunks, width, weights, o, distance,
                                   slot_bytes, table, escaped, &escapes, loc);
        } else {
            for (size_t c0 = 0; c0 < dim; c0 += 32)
                nibble_run_block32(chunked, located, slots, positions, k, end, count, c0, dim, chunks, width, weights, o, distance,
                                   slot_bytes, table, escaped, &escapes, loc);
        }
        k = end;
    }
    if (located) {
        loc_in->n = own.n;
        loc_in->refused = own.refused;
    }
    return escapes;
}

static AVX2 size_t nibble_reduce_avx2(const void **slots, const intptr_t *positions, size_t count, size_t dim,
                                      size_t chunks, const float *weights, const intptr_t *targets, float *out,
                                      size_t distance, const uint8_t *table, intptr_t *escaped, locator *loc) {
    const __m128i t = _mm_loadu_si128((const __m128i *)table);
    size_t escapes = 0;
    DISPATCH_NIBBLE(nibble_reduce_typed)
    return escapes;
}

int pkm_nibble_gather_reduce_fits(size_t dim, size_t chunks) {
    return pkm_gather_reduce_level() >= PKM_KERNEL_AVX2 && dim > 0 && dim % 32 == 0 && chunks > 0 && dim % chunks == 0 &&
           (dim / chunks) % 8 == 0;
}

size_t pkm_nibble_gather_reduce(const void *const *slots, const intptr_t *positions, size_t count, size_t dim,
                                size_t chunks, const float *weights, const intptr_t *targets, float *out,
                                size_t prefetch_distance, const uint8_t *table, intptr_t *escaped) {
    return pkm_nibble_gather_reduce_at(pkm_gather_reduce_level(), slots, positions, count, dim, chunks, weights, targets, out,
                                       prefetch_distance, table, escaped);
}

/// The nibble reduce on the best path up to `level`, over slots given or located on the way.
static size_t nibble_reduce_path(int level, const void **slots, const intptr_t *positions, size_t count, size_t dim, size_t chunks,
                                 const float *weights, const intptr_t *targets, float *out, size_t prefetch_distance,
                                 const uint8_t *table, intptr_t *escaped, locator *loc) {
    if (count == 0 || !pkm_nibble_gather_reduce_fits(dim, chunks)) return 0;
    // As gather_reduce_path: the first slots asked for at once (all of them, located, without a distance).
    const size_t slot_bytes = dim / 2 + dim;
    for (size_t k = 0; k < (loc && !prefetch_distance ? count : prefetch_distance) && k < count; k++) {
        if (loc) slots[k] = locate_row(rows_kind(&loc->map), loc, k);
        pkm_prefetch(slots[k], slot_bytes);
    }
    if (level >= PKM_KERNEL_AVX512 && pkm_gather_reduce_level() >= PKM_KERNEL_AVX512 && dim % 64 == 0 && (dim / chunks) % 16 == 0)
        return nibble_reduce_avx512(slots, positions, count, dim, chunks, weights, targets, out, prefetch_distance, table, escaped, loc);
    return nibble_reduce_avx2(slots, positions, count, dim, chunks, weights, targets, out, prefetch_distance, table, escaped, loc);
}

size_t pkm_nibble_gather_reduce_at(int level, const void *const *slots, const intptr_t *positions, size_t count, size_t dim,
                                   size_t chunks, const float *weights, const intptr_t *targets, float *out,
                                   size_t prefetch_distance, const uint8_t *table, intptr_t *escaped) {
    // Slots given are only read (`loc` NULL).
    return nibble_reduce_path(level, (const void **)slots, positions, count, dim, chunks, weights, targets, out, prefetch_distance,
                              table, escaped, NULL);
}

size_t pkm_nibble_gather_reduce_rows_at(int level, const pkm_row_map *map, const intptr_t *indices, size_t count, size_t dim,
                                        size_t chunks, const float *weights, const intptr_t *targets, float *out, size_t outputs,
                                        size_t prefetch_distance, const uint8_t *table, const void **slots, intptr_t *escaped,
                                        intptr_t *unchecked, size_t *unchecked_count) {
    locator loc = {*map, indices, outputs, unchecked, 0, 0};
    const size_t escapes = nibble_reduce_path(level, slots, NULL, count, dim, chunks, weights, targets, out, prefetch_distance, table,
                                              escaped, &loc);
    *unchecked_count = loc.n;
    return loc.refused ? SIZE_MAX : escapes;
}

size_t pkm_nibble_gather_reduce_rows(const pkm_row_map *map, const intptr_t *indices, size_t count, size_t dim, size_t chunks,
                                     const float *weights, const intptr_t *targets, float *out, size_t outputs,
                                     size_t prefetch_distance, const uint8_t *table, const void **slots, intptr_t *escaped,
                                     intptr_t *unchecked, size_t *unchecked_count) {
    return pkm_nibble_gather_reduce_rows_at(pkm_gather_reduce_level(), map, indices, count, dim, chunks, weights, targets, out, outputs,
                                            prefetch_distance, table, slots, escaped, unchecked, unchecked_count);
}
