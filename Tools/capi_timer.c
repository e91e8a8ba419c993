/* Times pkm_layer_lookup from C, with no Python in the way: the baseline of
 * Tools/bench_python.py. Reads queries float32 [N, H, 2, d] from a raw file, calls lookup on
 * consecutive batches of BATCH queries ROUNDS times, and prints one JSON line with the median
 * and best seconds per call.
 *
 *     capi_timer STORE QUERIES.f32 BATCH ROUNDS
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "pkmstore.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: capi_timer STORE QUERIES.f32 BATCH ROUNDS\n"); return 2; }
    size_t batch = (size_t)atol(argv[3]), rounds = (size_t)atol(argv[4]);
    pkm_error e;
    pkm_layer layer;
    if (pkm_layer_open(argv[1], 0, 256u << 20, &layer, &e) != PKM_OK) { fprintf(stderr, "%s\n", e.message); return 1; }
    pkm_layer_info info;
    pkm_layer_describe(layer, &info, &e);
    size_t per = (size_t)(info.heads * 2 * info.key_dim);
    FILE *f = fopen(argv[2], "rb");
    if (!f) { perror(argv[2]); return 1; }
    fseek(f, 0, SEEK_END);
    size_t queries = (size_t)ftell(f) / sizeof(float) / per;
    fseek(f, 0, SEEK_SET);
    float *q = malloc(queries * per * sizeof(float));
    if (fread(q, sizeof(float), queries * per, f) != queries * per) { fprintf(stderr, "short read\n"); return 1; }
    fclose(f);
    size_t batches = queries / batch;
    float *out = malloc(batch * (size_t)info.output_dim * sizeof(float));
    int64_t *idx = malloc(batch * (size_t)(info.heads * info.top_k) * sizeof(int64_t));
    float *w = malloc(batch * (size_t)(info.heads * info.top_k * info.cores) * sizeof(float));
    double *times = malloc(rounds * batches * sizeof(double));
    size_t n = 0;
    for (size_t r = 0; r < rounds; r++) {
        for (size_t b = 0; b < batches; b++) {
            double start = now();
            if (pkm_layer_lookup(layer, q + b * batch * per, batch, out, idx, w, &e) != PKM_OK) { fprintf(stderr, "%s\n", e.message); return 1; }
            times[n++] = now() - start;
        }
    }
    qsort(times, n, sizeof(double), by_value);
    printf("{\"batch\": %zu, \"calls\": %zu, \"median_seconds\": %.9f, \"best_seconds\": %.9f}\n", batch, n, times[n / 2], times[0]);
    pkm_layer_close(layer, &e);
    return 0;
}
