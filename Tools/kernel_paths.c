// Each code path of the gather-reduce kernel (portable, AVX2, AVX-512) over the same random rows
// of a table in huge-page memory; a plain loop of the shape of FBGEMM's embedding_bag kernel (one
// bag at a time, its sums in registers, the row 32 rows ahead prefetched; no targets, positions or
// chunks); the nibble kernel over the same rows coded as 96-byte nibble slots (Spec/FORMAT.md,
// "Nibble"); the AVX-512 path called once per bag of 128 rows (as a batch of one query is); and
// the AVX-512 path over a copy of the table in 4 KiB pages; alternating in one process, so that
// this VM's drift between runs does not decide the comparison. Built and run by
// Tools/kernel_paths.sh.
//     kernel_paths LOG2_ROWS        (64 bf16 values per row, bags of 128 rows, 256 bags a call)
#define _GNU_SOURCE
#include "gather_kernel.h"
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <sys/mman.h>
#include <time.h>
#include <immintrin.h>
#include <math.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

/// A table of `rows` bf16 rows of 64 in anonymous memory, with or without huge pages.
static uint16_t *table(size_t rows, int huge) {
    const size_t bytes = rows * 128;
    uint16_t *t = mmap(0, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (t == MAP_FAILED) { perror("mmap"); exit(1); }
    madvise(t, bytes, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    for (size_t i = 0; i < rows * 64; i++) t[i] = 0x3F80 | (i & 0x7F);
    return t;
}

#define AVX512 __attribute__((target("avx512f,avx512bw")))
static inline AVX512 __m512 bf16x16(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

/// The plain loop: bags of `per` consecutive rows, one output row each (overwritten).
static AVX512 void plain_bags(const void *const *rows, size_t bags, size_t per, const float *w, float *out) {
    const size_t n = bags * per, ahead = 32;
    for (size_t b = 0; b < bags; b++) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (size_t i = b * per; i < (b + 1) * per; i++) {
            if (i + ahead < n) {
                _mm_prefetch((const char *)rows[i + ahead], _MM_HINT_T0);
                _mm_prefetch((const char *)rows[i + ahead] + 64, _MM_HINT_T0);
            }
            const uint16_t *r = rows[i];
            const __m512 x = _mm512_set1_ps(w[i]);
            a0 = _mm512_fmadd_ps(bf16x16(r), x, a0);
            a1 = _mm512_fmadd_ps(bf16x16(r + 16), x, a1);
            a2 = _mm512_fmadd_ps(bf16x16(r + 32), x, a2);
            a3 = _mm512_fmadd_ps(bf16x16(r + 48), x, a3);
        }
        float *o = out + b * 64;
        _mm512_storeu_ps(o, a0); _mm512_storeu_ps(o + 16, a1); _mm512_storeu_ps(o + 32, a2); _mm512_storeu_ps(o + 48, a3);
    }
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: kernel_paths LOG2_ROWS\n"); return 2; }
    const size_t rows = 1ull << atoi(argv[1]), q = 256, per = 128, n = q * per, passes = 16;
    uint16_t *tables[2] = {table(rows, 1), table(rows, 0)};
    size_t *pick = malloc(n * passes * sizeof(size_t));
    const void **rp = malloc(n * passes * sizeof(void *));
    intptr_t *tg = malloc(n * sizeof(intptr_t));
    float *w = malloc(n * 4), *out = malloc(q * 64 * 4);
    uint64_t s = 88172645463325252ull;
    for (size_t i = 0; i < n * passes; i++) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; pick[i] = s % rows; }
    for (size_t i = 0; i < n; i++) { tg[i] = (intptr_t)(i / per); w[i] = 1.0f / (i % 7 + 1); }
    // The same rows as nibble slots: every top byte is 0x3F (code 0), the low bytes as they are.
    uint8_t *slots = mmap(0, rows * 96, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (slots == MAP_FAILED) { perror("mmap"); return 1; }
    madvise(slots, rows * 96, MADV_HUGEPAGE);
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < 64; j++) { slots[r * 96 + j / 2] = 0; slots[r * 96 + 32 + j] = (uint8_t)tables[0][r * 64 + j]; }
    const uint8_t codes[16] = {0x3F};
    intptr_t *escaped = malloc(n * sizeof(intptr_t));
    // Runs: the three paths, the plain loop, the nibble kernel and one call a bag over huge pages,
    // then AVX-512 over 4 KiB pages (its copy evicts the first from the caches: the run after it
    // starts cold).
    enum { RUNS = 7, PLAIN = -1, NIBBLE = -2, BAGS = -3 };
    const int level[RUNS] = {PKM_KERNEL_PORTABLE, PKM_KERNEL_AVX2, PKM_KERNEL_AVX512, PLAIN, NIBBLE, BAGS, PKM_KERNEL_AVX512};
    const int on[RUNS] = {0, 0, 0, 0, 0, 0, 1};
    const char *name[RUNS] = {"portable", "avx2", "avx512", "plain loop (avx512)", "nibble (avx512)", "avx512, a call a bag",
                              "avx512, 4 KiB pages"};
    const int plain = pkm_gather_reduce_level() == PKM_KERNEL_AVX512;
    double res[RUNS][15];
    for (int p = 0; p < 15; p++) {
        for (int run = 0; run < RUNS; run++) {
            if ((level[run] == PLAIN || level[run] == NIBBLE) && !plain) continue;
            for (size_t i = 0; i < n * passes; i++)
                rp[i] = level[run] == NIBBLE ? (const void *)(slots + pick[i] * 96) : tables[on[run]] + pick[i] * 64;
            const double t0 = now();
            for (size_t b = 0; b < passes; b++) {
                for (size_t i = 0; i < q * 64; i++) out[i] = 0;
                const void **batch = rp + b * n;
                if (level[run] == PLAIN) plain_bags(batch, q, per, w, out);
                else if (level[run] == NIBBLE) pkm_nibble_gather_reduce_at(PKM_KERNEL_AVX512, batch, NULL, n, 64, 1, w, tg, out, 32, codes, escaped);
                else if (level[run] == BAGS)
                    for (size_t g = 0; g < q; g++)
                        pkm_gather_reduce_at(PKM_KERNEL_AVX512, PKM_ELEMENT_BF16, batch + g * per, NULL, per, 64, 1, w + g * per, NULL,
                                             out + g * 64, 32, NULL);
                else pkm_gather_reduce_at(level[run], PKM_ELEMENT_BF16, batch, NULL, n, 64, 1, w, tg, out, 32, NULL);
            }
            res[run][p] = n * passes / (now() - t0) / 1e6;
        }
    }
    if (plain) {  // the plain loop and the nibble kernel sum what the kernel sums
        float *kernel = calloc(q * 64, 4), *nibble = calloc(q * 64, 4);
        const void **coded = malloc(n * sizeof(void *));
        for (size_t i = 0; i < n; i++) { rp[i] = tables[0] + pick[i] * 64; coded[i] = slots + pick[i] * 96; }
        pkm_gather_reduce_at(PKM_KERNEL_AVX512, PKM_ELEMENT_BF16, rp, NULL, n, 64, 1, w, tg, kernel, 32, NULL);
        plain_bags(rp, q, per, w, out);
        pkm_nibble_gather_reduce_at(PKM_KERNEL_AVX512, coded, NULL, n, 64, 1, w, tg, nibble, 32, codes, escaped);
        for (size_t i = 0; i < q * 64; i++) {
            if (fabsf(out[i] - kernel[i]) > 1e-4f * fabsf(kernel[i])) { fprintf(stderr, "plain loop disagrees at %zu\n", i); return 1; }
            if (fabsf(nibble[i] - kernel[i]) > 1e-4f * fabsf(kernel[i])) { fprintf(stderr, "nibble kernel disagrees at %zu\n", i); return 1; }
        }
        free(kernel); free(nibble); free(coded);
    }
    for (int run = 0; run < RUNS; run++) {
        if ((level[run] == PLAIN || level[run] == NIBBLE) && !plain) continue;
        qsort(res[run], 15, sizeof(double), cmp);
        printf("2^%s %-20s median %.1f max %.1f M rows/s\n", argv[1], name[run], res[run][7], res[run][14]);
    }
    return 0;
}
