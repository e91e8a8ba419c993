// The gather-reduce kernel built twice, prefetching into the second level (locality 1,
// `prefetcht2`: kernel A) and into the first (locality 3, `prefetcht0`: kernel B), over the same
// random rows of one table, alternating in one process so that this VM's drift between runs does
// not decide the comparison. Built and run by Tools/prefetch_hint.sh.
//     prefetch_hint LOG2_ROWS HUGE    (64 bf16 values a row, bags of 128 rows, 256 bags a call;
//                                      HUGE 1: the table in 2 MiB pages, 0: in 4 KiB pages)
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

typedef void (*kernel)(int, int, const void *const *, const intptr_t *, size_t, size_t, size_t, const float *,
                       const intptr_t *, float *, size_t, const float *);
void second_gather_reduce_at(int, int, const void *const *, const intptr_t *, size_t, size_t, size_t, const float *,
                             const intptr_t *, float *, size_t, const float *);
void first_gather_reduce_at(int, int, const void *const *, const intptr_t *, size_t, size_t, size_t, const float *,
                            const intptr_t *, float *, size_t, const float *);

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: prefetch_hint LOG2_ROWS HUGE\n"); return 2; }
    const size_t rows = 1ull << atoi(argv[1]), q = 256, per = 128, n = q * per, passes = 16, rounds = 21;
    const int huge = atoi(argv[2]);
    uint16_t *t = mmap(0, rows * 128, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (t == MAP_FAILED) { perror("mmap"); return 1; }
    madvise(t, rows * 128, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    for (size_t i = 0; i < rows * 64; i++) t[i] = 0x3F80 | (i & 0x7F);
    const void **rp = malloc(n * passes * sizeof(void *));
    intptr_t *tg = malloc(n * sizeof(intptr_t));
    float *w = malloc(n * 4), *out = malloc(q * 64 * 4);
    uint64_t s = 88172645463325252ull;
    for (size_t i = 0; i < n * passes; i++) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; rp[i] = t + (s % rows) * 64; }
    for (size_t i = 0; i < n; i++) { tg[i] = (intptr_t)(i / per); w[i] = 1.0f / (i % 7 + 1); }
    const kernel kernels[2] = {second_gather_reduce_at, first_gather_reduce_at};
    double rate[2][21];
    for (size_t r = 0; r < rounds; r++) {
        for (int k = 0; k < 2; k++) {
            const double t0 = now();
            for (size_t b = 0; b < passes; b++) {
                for (size_t i = 0; i < q * 64; i++) out[i] = 0;
                kernels[k](2 /* AVX-512 where the processor has it */, 3 /* bf16 */, rp + b * n, NULL, n, 64, 1, w, tg, out, 32, NULL);
            }
            rate[k][r] = n * passes / (now() - t0) / 1e6;
        }
    }
    for (int k = 0; k < 2; k++) qsort(rate[k], rounds, sizeof(double), cmp);
    printf("2^%s rows, %s pages: prefetcht2 %.1f, prefetcht0 %.1f M rows/s (medians of %zu); t0/t2 %.2f\n", argv[1],
           huge ? "2 MiB" : "4 KiB", rate[0][rounds / 2], rate[1][rounds / 2], rounds, rate[1][rounds / 2] / rate[0][rounds / 2]);
    return 0;
}
