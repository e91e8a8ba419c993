// The roads by which the kernel that locates its rows (pkm_gather_reduce_rows) finds them, over
// the same random rows of a table in huge-page memory, alternating in one process: flat (row r
// at base + 128 r, as a resident table); sharded as a raw store of format version 5 keeps them
// (shards of 481 rows at a 64 KiB stride, each a 48-byte header then groups of a 64-byte
// checksum line and 8 rows), without and with a bitmap of checked groups (every bit set, as
// once a process has read the table); the sharded road over a flat layout (481-row shards back
// to back, rows contiguous: the same code, the flat road's memory); the rows given as pointers
// (pkm_gather_reduce); and the sharded rows located in a loop of their own (pkm_locate_rows),
// then summed as given. Separates what locating a row costs from what the store's
// layout costs. Each road first reads its copy of the table whole, then makes an untimed pass
// over the rows it times. Built and run by Tools/row_roads.sh.
//     row_roads LOG2_ROWS        (64 bf16 values per row, bags of 128 rows, 256 bags a call)
#define _GNU_SOURCE
#include "gather_kernel.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

static char *huge(size_t bytes) {
    char *p = mmap(0, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(1); }
    madvise(p, bytes, MADV_HUGEPAGE);
    return p;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: row_roads LOG2_ROWS\n"); return 2; }
    enum { PER_SHARD = 481, STRIDE = 65536, ROUNDS = 31 };
    const size_t rows = 1ull << atoi(argv[1]), shards = (rows + PER_SHARD - 1) / PER_SHARD;
    const size_t q = 256, per = 128, n = q * per, passes = 16;
    char *flat = huge(rows * 128), *store = huge(shards * STRIDE);
    uint32_t *grouped = malloc(PER_SHARD * 4), *contiguous = malloc(PER_SHARD * 4);
    intptr_t *stored = malloc(shards * sizeof(intptr_t)), *packed = malloc(shards * sizeof(intptr_t));
    for (size_t i = 0; i < PER_SHARD; i++) {
        grouped[i] = (uint32_t)((i >> 3) * (64 + 8 * 128) + 64 + (i & 7) * 128);
        contiguous[i] = (uint32_t)(i * 128);
    }
    for (size_t s = 0; s < shards; s++) {
        stored[s] = (intptr_t)(store + s * STRIDE + 64);  // a blob's data starts 16 bytes into its page, its groups 48 after
        packed[s] = (intptr_t)(flat + s * PER_SHARD * 128);
    }
    for (size_t r = 0; r < rows; r++) {
        uint16_t *f = (uint16_t *)(flat + r * 128), *g = (uint16_t *)((char *)stored[r / PER_SHARD] + grouped[r % PER_SHARD]);
        for (int j = 0; j < 64; j++) f[j] = g[j] = (uint16_t)(0x3F80 | ((r + j) & 0x7F));
    }
    unsigned shift = 0;
    while ((1u << shift) < (PER_SHARD + 7) / 8) shift++;
    const size_t words = ((shards << shift) + 63) / 64;
    uint64_t *checked = malloc(words * 8);
    memset(checked, 0xFF, words * 8);
    // The store's multiplier: ceil(2^64 / rows a shard), so that the high word of multiplier x r is r / 481.
    const uint64_t multiplier = (uint64_t)((((unsigned __int128)1 << 64) + PER_SHARD - 1) / PER_SHARD);
    enum { ROADS = 6, GIVEN = 4, LOCATED_FIRST = 5 };
    const pkm_row_map maps[ROADS - 1] = {
        {flat, 128, NULL, 0, 0, NULL, NULL, 0, 0, rows},
        {NULL, 128, stored, PER_SHARD, multiplier, grouped, NULL, shift, 3, rows},
        {NULL, 128, stored, PER_SHARD, multiplier, grouped, checked, shift, 3, rows},
        {NULL, 128, packed, PER_SHARD, multiplier, contiguous, NULL, shift, 3, rows}};
    const char *name[ROADS] = {"flat", "sharded", "sharded, checked", "sharded, flat layout", "given pointers",
                               "sharded, located first"};
    intptr_t *pick = malloc(n * passes * sizeof(intptr_t)), *tg = malloc(n * sizeof(intptr_t)), *unchecked = malloc(n * sizeof(intptr_t));
    const void **given = malloc(n * passes * sizeof(void *)), **located = malloc(n * sizeof(void *));
    float *w = malloc(n * 4), *out = malloc(q * 64 * 4), *first = malloc(q * 64 * 4);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < n * passes; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        pick[i] = (intptr_t)(x % rows);
        given[i] = flat + pick[i] * 128;
    }
    for (size_t i = 0; i < n; i++) { tg[i] = (intptr_t)(i / per); w[i] = 1.0f / (i % 7 + 1); }
    double rate[ROADS][ROUNDS];
    for (int round = 0; round < ROUNDS; round++) {
        for (int road = 0; road < ROADS; road++) {
            // Its copy of the table read whole first, so that each road starts with its own rows in
            // the caches as far as they hold it (the roads read two copies: right after a road over
            // the other, a road would pay for that one's evictions, and after one over the same
            // copy, it would not).
            const int stored_copy = road == 1 || road == 2 || road == LOCATED_FIRST;
            const char *copy = stored_copy ? store : flat;
            const size_t bytes = stored_copy ? shards * STRIDE : rows * 128;
            volatile uint64_t touched = 0;
            for (size_t at = 0; at < bytes; at += 64) touched += *(const volatile char *)(copy + at);
            double t0 = 0;
            for (size_t b = 0; b <= passes; b++) {
                if (b == 1) t0 = now();
                memset(out, 0, q * 64 * 4);
                if (road == GIVEN) {
                    pkm_gather_reduce(PKM_ELEMENT_BF16, given + (b % passes) * n, NULL, n, 64, 1, w, tg, out, 32, NULL);
                } else if (road == LOCATED_FIRST) {
                    // The rows located in a loop of their own (pkm_locate_rows), then summed as given.
                    size_t listed = 0;
                    pkm_locate_rows(&maps[1], pick + (b % passes) * n, n, &listed, located);
                    pkm_gather_reduce(PKM_ELEMENT_BF16, located, NULL, n, 64, 1, w, tg, out, 32, NULL);
                } else if (pkm_gather_reduce_rows(PKM_ELEMENT_BF16, &maps[road], pick + (b % passes) * n, n, 64, 1, w, tg, out, q, 32, NULL, located,
                                                  unchecked) != 0) {
                    fprintf(stderr, "row_roads: %s listed rows as unchecked or refused one\n", name[road]);
                    return 1;
                }
                // Every road sums the same rows: the last pass's sums must agree (up to the order of the sums).
                if (b == passes && round == 0) {
                    if (road == 0) memcpy(first, out, q * 64 * 4);
                    for (size_t i = 0; i < q * 64; i++)
                        if (out[i] != first[i]) { fprintf(stderr, "row_roads: %s disagrees at %zu\n", name[road], i); return 1; }
                }
            }
            rate[road][round] = n * passes / (now() - t0) / 1e6;
        }
    }
    for (int road = 0; road < ROADS; road++) {
        qsort(rate[road], ROUNDS, sizeof(double), cmp);
        printf("2^%s %-22s median %.1f max %.1f M rows/s\n", argv[1], name[road], rate[road][ROUNDS / 2], rate[road][ROUNDS - 1]);
    }
    return 0;
}
