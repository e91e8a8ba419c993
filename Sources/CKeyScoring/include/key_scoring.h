// Approximate key scores from bfloat16 copies of the keys: half the bytes of float keys, for
// the small batches whose search is bound by reading the keys (Spec/RETRIEVAL.md, "Exact
// selection from approximate scores"). AVX2/FMA is chosen at run time, as in CGatherKernel.
#ifndef PKM_KEY_SCORING_H
#define PKM_KEY_SCORING_H

#include <stddef.h>
#include <stdint.h>

/// out[b * count + i] = Σ_j bf16(keys[i * dim + j]) · queries[b * query_stride + j] for
/// i < count and b < batch, accumulated in float (fused multiply-adds, any order). Each key is
/// read once for the whole batch.
void pkm_score_bf16(const uint16_t *keys, size_t count, size_t dim, const float *queries, size_t query_stride,
                    size_t batch, float *out);

/// out[i] = the largest of scores[i * block ..< (i + 1) * block] for i < blocks, NaNs skipped (-inf when all are).
void pkm_block_maxima(const float *scores, size_t block, size_t blocks, float *out);

/// Writes the positions of the scores ≥ bound, ascending, into `positions` (room for `count`);
/// returns how many there are.
size_t pkm_positions_at_least(const float *scores, size_t count, float bound, uint32_t *positions);

/// The OpenBLAS kernels (its OPENBLAS_CORETYPE names) this CPU runs: "SkylakeX" with AVX-512
/// F, CD, BW, DQ and VL, "Haswell" with AVX2 and FMA, NULL otherwise.
const char *pkm_blas_core_for_cpu(void);

/// Whether this CPU runs pkm_score_bf16_pairs (AVX512-BF16: both operands in bfloat16, twice
/// the multiply-adds of float per instruction, for the large batches that are bound by arithmetic).
int pkm_bf16_pairs_supported(void);

/// The bytes pkm_pack_bf16_pairs writes for `count` keys of `dim` elements: the keys in groups of
/// 16, each group `ceil(dim / 2)` pairs of 16 keys x 2 elements (64 bytes), zero padded.
size_t pkm_bf16_pairs_size(size_t count, size_t dim);

/// Lays out bfloat16 keys `bits[count][dim]` (subnormals already flushed to zero) for pkm_score_bf16_pairs.
void pkm_pack_bf16_pairs(const uint16_t *bits, size_t count, size_t dim, uint16_t *out);

/// `query` rounded to bfloat16 (nearest, ties to even; subnormal results and inputs flushed to
/// zero) as pairs `out[ceil(dim / 2)]`, element 2p in the low half of pair p; returns
/// Σ (q_j − q̃_j)² and Σ q̃_j² into `residual` and `rounded` (computed in double).
void pkm_pack_query_pairs(const float *query, size_t dim, uint32_t *out, double *residual, double *rounded);

/// out[b * count + i] = the sum of the products of key i's and query b's bfloat16 pairs, in
/// float (VDPBF16PS: exact products, each addition rounded to nearest even, subnormal results
/// flushed to zero), for i < count and b < batch; queries are `ceil(dim / 2)` pairs apart.
/// Only when pkm_bf16_pairs_supported().
void pkm_score_bf16_pairs(const uint16_t *packed, size_t count, size_t dim, const uint32_t *queries, size_t batch,
                          float *out);

#endif
