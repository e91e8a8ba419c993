// Two builds of the locating gather-reduce kernel, A and B, over the rows of a raw store's own
// file (found by its shard blobs, Spec/FORMAT.md "Shard blobs": a blob begins 16 bytes into a
// 4 KiB page) and over a flat copy of the same values in huge-page memory, the same rows,
// alternating in one process so that this VM's drift between runs does not decide the
// comparison. Built and run by Tools/kernel_ab.sh, which says what A and B are.
//     kernel_ab STORE FLAT ROWS_BIN NAME_A NAME_B    (a raw bf16 store of 64 values a row, format
//                                                   version 5 or later; FLAT its rows back to
//                                                   back; the rows to reduce as int64
//                                                   little-endian, bags of 128)
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "gather_kernel.h"

typedef size_t (*kernel)(int, int, const pkm_row_map *, const intptr_t *, size_t, size_t, size_t, const float *,
                         const intptr_t *, float *, size_t, size_t, const float *, const void **, intptr_t *);
size_t a_gather_reduce_rows_at(int, int, const pkm_row_map *, const intptr_t *, size_t, size_t, size_t, const float *,
                               const intptr_t *, float *, size_t, size_t, const float *, const void **, intptr_t *);
size_t b_gather_reduce_rows_at(int, int, const pkm_row_map *, const intptr_t *, size_t, size_t, size_t, const float *,
                               const intptr_t *, float *, size_t, size_t, const float *, const void **, intptr_t *);
int b_gather_reduce_level(void);

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

/// The whole file at `path`, mapped read-only (advised MADV_RANDOM, as LMDB maps a store).
static const char *map_file(const char *path, size_t *size) {
    const int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) { perror(path); exit(1); }
    *size = (size_t)st.st_size;
    void *m = mmap(0, *size, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) { perror("mmap"); exit(1); }
    madvise(m, *size, MADV_RANDOM);
    close(fd);
    return m;
}

int main(int argc, char **argv) {
    if (argc != 6) { fprintf(stderr, "usage: kernel_ab STORE FLAT ROWS_BIN NAME_A NAME_B\n"); return 2; }
    size_t store_bytes, flat_bytes, rows_bytes;
    const char *store = map_file(argv[1], &store_bytes), *flat_file = map_file(argv[2], &flat_bytes);
    const intptr_t *picked = (const intptr_t *)map_file(argv[3], &rows_bytes);
    const size_t dim = 64, row_bytes = 128, rows = flat_bytes / row_bytes, n = rows_bytes / 8, per = 128;
    // Codec 3 blobs: the 32-byte header (magic, codec 3, bf16; rows at 8, dim at 12, shard at 16).
    size_t per_shard = 0;
    for (size_t p = 0; p + 4096 <= store_bytes && !per_shard; p += 4096) {
        const unsigned char *b = (const unsigned char *)store + p + 16;
        uint64_t shard;
        memcpy(&shard, b + 16, 8);
        if (memcmp(b, "PKS1", 4) == 0 && b[4] == 3 && shard == 0) memcpy(&per_shard, b + 8, 4);
    }
    if (!per_shard) { fprintf(stderr, "kernel_ab: no raw (codec 3) shard 0 in %s\n", argv[1]); return 1; }
    const size_t shards = (rows + per_shard - 1) / per_shard, group = 8, line = 64;
    intptr_t *bases = calloc(shards, sizeof *bases);
    size_t found = 0;
    for (size_t p = 0; p + 4096 <= store_bytes; p += 4096) {
        const unsigned char *b = (const unsigned char *)store + p + 16;
        uint64_t shard;
        memcpy(&shard, b + 16, 8);
        if (memcmp(b, "PKS1", 4) == 0 && b[4] == 3 && b[5] == 3 && shard < shards && !bases[shard]) {
            bases[shard] = (intptr_t)b;
            found++;
        }
    }
    if (found != shards) { fprintf(stderr, "kernel_ab: %zu of %zu shards found\n", found, shards); return 1; }
    uint32_t *offsets = malloc(per_shard * sizeof *offsets);
    for (size_t i = 0; i < per_shard; i++) offsets[i] = (uint32_t)(48 + (i / group) * (line + group * row_bytes) + line + (i % group) * row_bytes);
    // The flat copy in huge-page memory, as the memory limit of `memtool bench` reads it.
    char *flat = mmap(0, flat_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (flat == MAP_FAILED) { perror("mmap"); return 1; }
    madvise(flat, flat_bytes, MADV_HUGEPAGE);
    memcpy(flat, flat_file, flat_bytes);
    const pkm_row_map sharded = {0, row_bytes, bases, per_shard, UINT64_MAX / per_shard + 1, offsets, 0, 0, 0, rows};
    const pkm_row_map flat_map = {flat, row_bytes, 0, 0, 0, 0, 0, 0, 0, rows};

    const size_t call = 2048;  // rows per kernel call, as the store makes them (Store.rawGroupRows)
    intptr_t *targets = malloc(call * sizeof *targets), *unchecked = malloc(call * sizeof *unchecked);
    const void **located = malloc(call * sizeof *located);
    float *weights = malloc(n * sizeof *weights), *out = calloc(call / per * dim, sizeof *out);
    for (size_t k = 0; k < call; k++) targets[k] = (intptr_t)(k / per);
    for (size_t k = 0; k < n; k++) weights[k] = 1.0f / (float)(1 + k % 7);
    const kernel kernels[2] = {a_gather_reduce_rows_at, b_gather_reduce_rows_at};
    const pkm_row_map *maps[2] = {&sharded, &flat_map};
    enum { rounds = 12 };
    const int level = b_gather_reduce_level();
    double times[2][2][rounds];
    for (int round = 0; round < rounds; round++)
        for (int m = 0; m < 2; m++)
            for (int turn = 0; turn < 2; turn++) {
                // Each build goes first in every other round, and each timed pass follows an untimed
                // one of the same build over the same rows: a pass right after one over the other
                // table finds fewer of its rows in cache (in cache, that alone made one of two
                // copies of the same code 1.1-1.3x faster than the other).
                const int f = turn ^ (round & 1);
                double t0 = 0;
                for (int pass = 0; pass < 2; pass++) {
                    t0 = now();
                    for (size_t s = 0; s + call <= n; s += call)
                        if (kernels[f](level, PKM_ELEMENT_BF16, maps[m], picked + s, call, dim, 1, weights + s, targets, out, call / per,
                                       32, 0, located, unchecked) == SIZE_MAX) { fprintf(stderr, "kernel_ab: a row out of range\n"); return 1; }
                }
                times[m][f][round] = now() - t0;
            }
    printf("%zu rows (%zu a shard), %zu reduced, bags of %zu, %d alternating rounds, medians (M rows/s):\n", rows, per_shard,
           n / call * call, per, rounds);
    printf("| table | A: %s | B: %s | B/A, median (lowest-highest) of the rounds' |\n|---|---|---|---|\n", argv[4], argv[5]);
    const char *names[2] = {"the store's file, sharded", "flat copy, huge pages"};
    for (int m = 0; m < 2; m++) {
        double med[2], ratio[rounds];
        for (int round = 0; round < rounds; round++) ratio[round] = times[m][0][round] / times[m][1][round];
        qsort(ratio, rounds, sizeof(double), cmp);
        for (int f = 0; f < 2; f++) { qsort(times[m][f], rounds, sizeof(double), cmp); med[f] = (double)(n / call * call) / times[m][f][rounds / 2] / 1e6; }
        printf("| %s | %.1f | %.1f | %.3f (%.3f-%.3f) |\n", names[m], med[0], med[1], ratio[rounds / 2], ratio[0], ratio[rounds - 1]);
    }
    return 0;
}
