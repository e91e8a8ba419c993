// The nibble kernel over a table's slots against the raw kernel over the same rows decoded,
// both flat in huge pages, the same rows and weights, alternating in one process
// (Tools/nibble_roads.sh): what decoding a slot costs the reduce, in cache and beyond.
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include "gather_kernel.h"

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static int by_value(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }
static uint64_t state = 88172645463325252ull;
static uint64_t next(void) { state ^= state << 13; state ^= state >> 7; state ^= state << 17; return state; }
static void *huge(size_t n) {
    void *p = mmap(0, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(1); }
    madvise(p, n, MADV_HUGEPAGE);
    return p;
}

int main(int argc, char **argv) {
    const int e = argc > 1 ? atoi(argv[1]) : 16;
    // 64 bf16 values a row: a slot is 32 bytes of codes and 64 low bytes; bags of 128 rows.
    const size_t rows = (size_t)1 << e, dim = 64, slot = 96, row = 128, n = 1 << 19, bag = 128, call = 2048;
    uint8_t *slots = huge(rows * slot), *decoded = huge(rows * row);
    for (size_t i = 0; i < rows * slot; i++) slots[i] = (uint8_t)next();
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < dim / 2; j++) slots[r * slot + j] &= 0x77;  // codes 0-7: every slot coded
    uint8_t table[16];
    for (int i = 0; i < 16; i++) table[i] = (uint8_t)(0x3C + (i & 7) - 4 + (i >= 8 ? 0x80 : 0));
    const void **all = malloc(rows * sizeof *all);
    for (size_t r = 0; r < rows; r++) all[r] = slots + r * slot;
    pkm_nibble_decode(all, rows, dim, 2, table, decoded, 0);
    intptr_t *picked = malloc(n * sizeof *picked), *targets = malloc(call * sizeof *targets);
    intptr_t *listed = malloc(call * sizeof *listed), *unchecked = malloc(call * sizeof *unchecked);
    const void **located = malloc(call * sizeof *located);
    float *weights = malloc(n * sizeof *weights), *out[2] = {calloc(call / bag * dim, 4), calloc(call / bag * dim, 4)};
    for (size_t k = 0; k < n; k++) picked[k] = (intptr_t)(next() % rows), weights[k] = 1.0f / (float)(1 + k % 7);
    for (size_t k = 0; k < call; k++) targets[k] = (intptr_t)(k / bag);
    const pkm_row_map slot_map = {(const char *)slots, slot, 0, 0, 0, 0, 0, 0, 0, rows};
    const pkm_row_map row_map = {(const char *)decoded, row, 0, 0, 0, 0, 0, 0, 0, rows};
    enum { rounds = 12 };
    double t[2][rounds];
    for (int round = 0; round < rounds; round++)
        for (int turn = 0; turn < 2; turn++) {
            const int f = turn ^ (round & 1);  // each goes first in every other round
            double t0 = 0;
            for (int pass = 0; pass < 2; pass++) {  // an untimed pass, then a timed one of four
                t0 = now();
                for (int rep = 0; rep < (pass ? 4 : 1); rep++)
                    for (size_t s0 = 0; s0 + call <= n; s0 += call) {
                        size_t none = 0;
                        memset(out[f], 0, call / bag * dim * 4);
                        if (f) pkm_gather_reduce_rows(PKM_ELEMENT_BF16, &row_map, picked + s0, call, dim, 1, weights + s0, targets, out[f],
                                                      call / bag, 32, 0, located, unchecked);
                        else pkm_nibble_gather_reduce_rows(&slot_map, picked + s0, call, dim, 1, weights + s0, targets, out[f], call / bag, 32,
                                                           table, located, listed, unchecked, &none);
                    }
            }
            t[f][round] = now() - t0;
        }
    float worst = 0;
    for (size_t i = 0; i < call / bag * dim; i++) {
        const float d = out[0][i] > out[1][i] ? out[0][i] - out[1][i] : out[1][i] - out[0][i];
        if (d > worst) worst = d;
    }
    if (worst > 1e-3f) { printf("the two kernels disagree by %g\n", worst); return 1; }
    for (int f = 0; f < 2; f++) qsort(t[f], rounds, sizeof t[f][0], by_value);
    printf("2^%d rows, medians of %d rounds: nibble kernel over slots %.1f M rows/s, raw kernel over the rows decoded %.1f M rows/s\n",
           e, rounds, 4.0 * n / t[0][rounds / 2] / 1e6, 4.0 * n / t[1][rounds / 2] / 1e6);
    return 0;
}
