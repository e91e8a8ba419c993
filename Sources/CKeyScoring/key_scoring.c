#include "key_scoring.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define AVX2 __attribute__((target("avx2,fma")))

/// The float value of 8 bfloat16 bit patterns.
static inline AVX2 __m256 widen8(const uint16_t *p) {
    __m128i bits = _mm_loadu_si128((const __m128i *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
}

static inline AVX2 float sum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/// One query against one key: four independent accumulators, so that the fused multiply-adds
/// do not wait on each other's latency.
static inline AVX2 float key_times_query(const uint16_t *key, size_t dim, const float *q) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    size_t j = 0;
    for (; j + 32 <= dim; j += 32) {
        a0 = _mm256_fmadd_ps(widen8(key + j), _mm256_loadu_ps(q + j), a0);
        a1 = _mm256_fmadd_ps(widen8(key + j + 8), _mm256_loadu_ps(q + j + 8), a1);
        a2 = _mm256_fmadd_ps(widen8(key + j + 16), _mm256_loadu_ps(q + j + 16), a2);
        a3 = _mm256_fmadd_ps(widen8(key + j + 24), _mm256_loadu_ps(q + j + 24), a3);
    }
    for (; j + 8 <= dim; j += 8) a0 = _mm256_fmadd_ps(widen8(key + j), _mm256_loadu_ps(q + j), a0);
    float s = sum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; j < dim; j++) s += __builtin_bit_cast(float, (uint32_t)key[j] << 16) * q[j];
    return s;
}

/// Two keys against 4 queries: 8 accumulators in named registers (an array indexed by a loop
/// variable would live on the stack), each query chunk loaded once for both keys.
static inline AVX2 void two_keys_times_four_queries(const uint16_t *key, size_t dim, const float *q, size_t stride,
                                                    float *out, size_t out_stride) {
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00;
    const float *q0 = q, *q1 = q + stride, *q2 = q + 2 * stride, *q3 = q + 3 * stride;
    size_t j = 0;
    for (; j + 8 <= dim; j += 8) {
        const __m256 k0 = widen8(key + j), k1 = widen8(key + dim + j);
        __m256 v = _mm256_loadu_ps(q0 + j);
        a00 = _mm256_fmadd_ps(k0, v, a00); a10 = _mm256_fmadd_ps(k1, v, a10);
        v = _mm256_loadu_ps(q1 + j);
        a01 = _mm256_fmadd_ps(k0, v, a01); a11 = _mm256_fmadd_ps(k1, v, a11);
        v = _mm256_loadu_ps(q2 + j);
        a02 = _mm256_fmadd_ps(k0, v, a02); a12 = _mm256_fmadd_ps(k1, v, a12);
        v = _mm256_loadu_ps(q3 + j);
        a03 = _mm256_fmadd_ps(k0, v, a03); a13 = _mm256_fmadd_ps(k1, v, a13);
    }
    float s[2][4] = {{sum8(a00), sum8(a01), sum8(a02), sum8(a03)}, {sum8(a10), sum8(a11), sum8(a12), sum8(a13)}};
    for (size_t t = j; t < dim; t++) {
        for (size_t k = 0; k < 2; k++) {
            const float x = __builtin_bit_cast(float, (uint32_t)key[k * dim + t] << 16);
            for (size_t b = 0; b < 4; b++) s[k][b] += x * q[b * stride + t];
        }
    }
    for (size_t b = 0; b < 4; b++) {
        out[b * out_stride] = s[0][b];
        out[b * out_stride + 1] = s[1][b];
    }
}

static AVX2 void score_avx2(const uint16_t *keys, size_t count, size_t dim, const float *queries, size_t stride,
                            size_t batch, float *out) {
    const size_t full = batch / 4 * 4;
    size_t i = 0;
    for (; full > 0 && i + 2 <= count; i += 2) {
        for (size_t b0 = 0; b0 < full; b0 += 4) {
            two_keys_times_four_queries(keys + i * dim, dim, queries + b0 * stride, stride, out + b0 * count + i, count);
        }
    }
    // The keys and queries left over: one key and one query at a time.
    for (size_t k = 0; k < count; k++) {
        for (size_t b = k < i ? full : 0; b < batch; b++) out[b * count + k] = key_times_query(keys + k * dim, dim, queries + b * stride);
    }
}
#endif

static void score_portable(const uint16_t *keys, size_t count, size_t dim, const float *queries, size_t stride,
                           size_t batch, float *out) {
    for (size_t i = 0; i < count; i++) {
        for (size_t b = 0; b < batch; b++) {
            float s = 0;
            for (size_t j = 0; j < dim; j++) s += __builtin_bit_cast(float, (uint32_t)keys[i * dim + j] << 16) * queries[b * stride + j];
            out[b * count + i] = s;
        }
    }
}

void pkm_score_bf16(const uint16_t *keys, size_t count, size_t dim, const float *queries, size_t query_stride,
                    size_t batch, float *out) {
#if defined(__x86_64__)
    static int avx2 = -1;  // every thread that asks computes the same value
    int state = __atomic_load_n(&avx2, __ATOMIC_RELAXED);
    if (state < 0) {
        state = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        __atomic_store_n(&avx2, state, __ATOMIC_RELAXED);
    }
    if (state) return score_avx2(keys, count, dim, queries, query_stride, batch, out);
#endif
    score_portable(keys, count, dim, queries, query_stride, batch, out);
}

const char *pkm_blas_core_for_cpu(void) {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
    return NULL;
}

/* ---- bfloat16 x bfloat16 (AVX512-BF16) ------------------------------------------------------ */

static uint16_t bf16_nearest_flushed(float x, float *rounded) {
    uint32_t u = __builtin_bit_cast(uint32_t, x);
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;   /* finite inputs only: the search refuses others */
    if ((r & 0x7f80u) == 0) r &= 0x8000u;                  /* a subnormal (or zero) result: signed zero */
    *rounded = __builtin_bit_cast(float, r << 16);
    return (uint16_t)r;
}

size_t pkm_bf16_pairs_size(size_t count, size_t dim) { return (count + 15) / 16 * 16 * ((dim + 1) / 2) * 2 * sizeof(uint16_t); }

void pkm_pack_bf16_pairs(const uint16_t *bits, size_t count, size_t dim, uint16_t *out) {
    const size_t pairs = (dim + 1) / 2, groups = (count + 15) / 16;
    for (size_t g = 0; g < groups; g++)
        for (size_t p = 0; p < pairs; p++)
            for (size_t l = 0; l < 16; l++)
                for (size_t e = 0; e < 2; e++) {
                    const size_t key = g * 16 + l, j = 2 * p + e;
                    out[((g * pairs + p) * 16 + l) * 2 + e] = key < count && j < dim ? bits[key * dim + j] : 0;
                }
}

void pkm_pack_query_pairs(const float *query, size_t dim, uint32_t *out, double *residual, double *rounded) {
    double res = 0, norm = 0;
    for (size_t p = 0; p < (dim + 1) / 2; p++) {
        uint32_t pair = 0;
        for (size_t e = 0; e < 2 && 2 * p + e < dim; e++) {
            const float q = query[2 * p + e];
            float r;
            pair |= (uint32_t)bf16_nearest_flushed(q, &r) << (16 * e);
            res += ((double)q - r) * ((double)q - r);
            norm += (double)r * r;
        }
        out[p] = pair;
    }
    *residual = res;
    *rounded = norm;
}

#if defined(__x86_64__)
#define BF16 __attribute__((target("avx512f,avx512bw,avx512bf16")))

/// Query pair p of query b, broadcast to 16 lanes.
#define PAIR(b, p) ((__m512bh)_mm512_set1_epi32((int)queries[(b) * pairs + (p)]))

/// Four groups of 16 keys against queries [b0, b0 + 6): 24 accumulators in registers.
static inline BF16 void four_groups_six_queries(const __m512i *k, size_t pairs, const uint32_t *queries, size_t b0,
                                                float *out, size_t count, size_t key0) {
    __m512 a[6][4];
    for (int i = 0; i < 6; i++) for (int j = 0; j < 4; j++) a[i][j] = _mm512_setzero_ps();
    const __m512i *k0 = k, *k1 = k + pairs, *k2 = k + 2 * pairs, *k3 = k + 3 * pairs;
    for (size_t p = 0; p < pairs; p++) {
        const __m512bh x0 = (__m512bh)_mm512_loadu_si512(k0 + p), x1 = (__m512bh)_mm512_loadu_si512(k1 + p);
        const __m512bh x2 = (__m512bh)_mm512_loadu_si512(k2 + p), x3 = (__m512bh)_mm512_loadu_si512(k3 + p);
        #pragma clang loop unroll(full)
        for (int i = 0; i < 6; i++) {
            const __m512bh y = PAIR(b0 + i, p);
            a[i][0] = _mm512_dpbf16_ps(a[i][0], x0, y);
            a[i][1] = _mm512_dpbf16_ps(a[i][1], x1, y);
            a[i][2] = _mm512_dpbf16_ps(a[i][2], x2, y);
            a[i][3] = _mm512_dpbf16_ps(a[i][3], x3, y);
        }
    }
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 4; j++) _mm512_storeu_ps(out + (b0 + i) * count + key0 + 16 * j, a[i][j]);
}

/// One group of 16 keys against one query, written with a mask when the group is the last, partial one.
static inline BF16 void one_group_one_query(const __m512i *k, size_t pairs, const uint32_t *queries, size_t b,
                                            float *out, size_t count, size_t key0) {
    __m512 a = _mm512_setzero_ps();
    for (size_t p = 0; p < pairs; p++) a = _mm512_dpbf16_ps(a, (__m512bh)_mm512_loadu_si512(k + p), PAIR(b, p));
    const size_t left = count - key0;
    const __mmask16 mask = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
    _mm512_mask_storeu_ps(out + b * count + key0, mask, a);
}

static BF16 void score_pairs(const uint16_t *packed, size_t count, size_t dim, const uint32_t *queries, size_t batch,
                             float *out) {
    const size_t pairs = (dim + 1) / 2, groups = (count + 15) / 16, full = count / 64;
    const __m512i *k = (const __m512i *)packed;
    const size_t six = batch / 6 * 6;
    /* Keys in blocks of 64 (16 KiB at d = 128: they stay in L1 for the whole batch). */
    for (size_t blk = 0; blk < full; blk++) {
        const __m512i *kb = k + blk * 4 * pairs;
        for (size_t b = 0; b < six; b += 6) four_groups_six_queries(kb, pairs, queries, b, out, count, blk * 64);
        for (size_t b = six; b < batch; b++)
            for (size_t j = 0; j < 4; j++) one_group_one_query(kb + j * pairs, pairs, queries, b, out, count, blk * 64 + 16 * j);
    }
    for (size_t g = full * 4; g < groups; g++)
        for (size_t b = 0; b < batch; b++) one_group_one_query(k + g * pairs, pairs, queries, b, out, count, g * 16);
}
#endif

int pkm_bf16_pairs_supported(void) {
#if defined(__x86_64__)
    static int state = -1;  // every thread that asks computes the same value
    int s = __atomic_load_n(&state, __ATOMIC_RELAXED);
    if (s < 0) {
        s = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512bf16");
        __atomic_store_n(&state, s, __ATOMIC_RELAXED);
    }
    return s;
#else
    return 0;
#endif
}

void pkm_score_bf16_pairs(const uint16_t *packed, size_t count, size_t dim, const uint32_t *queries, size_t batch,
                          float *out) {
#if defined(__x86_64__)
    if (pkm_bf16_pairs_supported()) score_pairs(packed, count, dim, queries, batch, out);
#else
    (void)packed; (void)count; (void)dim; (void)queries; (void)batch; (void)out;
#endif
}

/* ---- Selection passes ----------------------------------------------------------------------- */

#if defined(__x86_64__)
static AVX2 void block_maxima_avx2(const float *s, size_t block, size_t blocks, float *out) {
    for (size_t i = 0; i < blocks; i++) {
        const float *p = s + i * block;
        /* max(new, running) keeps the running value when the new one is NaN: NaNs are skipped. */
        __m256 v = _mm256_set1_ps(-__builtin_inff());
        size_t j = 0;
        for (; j + 8 <= block; j += 8) v = _mm256_max_ps(_mm256_loadu_ps(p + j), v);
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        float m = _mm_cvtss_f32(h);
        for (; j < block; j++) m = p[j] > m ? p[j] : m;
        out[i] = m;
    }
}

static AVX2 size_t positions_at_least_avx2(const float *s, size_t n, float bound, uint32_t *positions) {
    const __m256 b = _mm256_set1_ps(bound);
    size_t found = 0, j = 0;
    for (; j + 8 <= n; j += 8) {
        unsigned mask = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(s + j), b, _CMP_GE_OQ));
        while (mask) {
            positions[found++] = (uint32_t)(j + (size_t)__builtin_ctz(mask));
            mask &= mask - 1;
        }
    }
    for (; j < n; j++) if (s[j] >= bound) positions[found++] = (uint32_t)j;
    return found;
}

static int has_avx2(void) {
    static int state = -1;  // every thread that asks computes the same value
    int s = __atomic_load_n(&state, __ATOMIC_RELAXED);
    if (s < 0) {
        s = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        __atomic_store_n(&state, s, __ATOMIC_RELAXED);
    }
    return s;
}
#endif

void pkm_block_maxima(const float *scores, size_t block, size_t blocks, float *out) {
#if defined(__x86_64__)
    if (has_avx2()) return block_maxima_avx2(scores, block, blocks, out);
#endif
    for (size_t i = 0; i < blocks; i++) {
        float m = -__builtin_inff();
        for (size_t j = 0; j < block; j++) m = scores[i * block + j] > m ? scores[i * block + j] : m;
        out[i] = m;
    }
}

size_t pkm_positions_at_least(const float *scores, size_t count, float bound, uint32_t *positions) {
#if defined(__x86_64__)
    if (has_avx2()) return positions_at_least_avx2(scores, count, bound, positions);
#endif
    size_t found = 0;
    for (size_t j = 0; j < count; j++) if (scores[j] >= bound) positions[found++] = (uint32_t)j;
    return found;
}
