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

#endif
