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
