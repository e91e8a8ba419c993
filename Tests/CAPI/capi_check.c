/* Drives the C API as a C caller would, including every misuse the header says is an error
 * rather than a crash: NULL pointers, unknown and closed handles, wrong sizes, small buffers.
 * Run by Tools/test.sh under AddressSanitizer (with the library built with it too).
 *
 *     capi_check STORE       (STORE: a store of two layers, from memtool create --synthetic --layers 2)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pkmstore.h"

static int failures = 0;

#define EXPECT(cond, ...) do { if (!(cond)) { failures++; fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__); fprintf(stderr, "\n"); } } while (0)

/* The call failed with `code` and a non-empty message. */
static void expect_error(int status, pkm_error *e, int code, const char *what) {
    EXPECT(status == code && e->code == code && strlen(e->message) > 0,
           "%s: status %d (want %d), message '%s'", what, status, code, e->message);
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: capi_check STORE GATED_STORE\n"); return 2; }
    const char *path = argv[1];
    pkm_error e;
    printf("%s\n", pkm_version());

    /* Opening: NULLs, a missing file. */
    pkm_store s = 0;
    expect_error(pkm_store_open(NULL, 0, &s, &e), &e, PKM_ERR_ARGUMENT, "open NULL path");
    expect_error(pkm_store_open(path, 0, NULL, &e), &e, PKM_ERR_ARGUMENT, "open NULL out");
    expect_error(pkm_store_open("/nonexistent/x.pkm", 0, &s, &e), &e, PKM_ERR_NOT_FOUND, "open missing");
    expect_error(pkm_store_open_with(path, 0, 0x80, &s, &e), &e, PKM_ERR_ARGUMENT, "unknown open flags");
    {   /* A resident store, and one without the background check, read the rows the mapped one does. */
        pkm_store r = 0, m = 0, n = 0;
        EXPECT(pkm_store_open_with(path, 0, PKM_OPEN_RESIDENT, &r, &e) == PKM_OK, "resident open: %s", e.message);
        EXPECT(pkm_store_open(path, 0, &m, &e) == PKM_OK, "open: %s", e.message);
        EXPECT(pkm_store_open_with(path, 0, PKM_OPEN_NO_BACKGROUND_CHECK, &n, &e) == PKM_OK, "open without the background check: %s", e.message);
        int64_t pick[4] = {0, 1, 4095, 77};
        float a[4 * 16], b[4 * 16], c[4 * 16];
        EXPECT(pkm_store_rows(r, pick, 4, a, &e) == PKM_OK && pkm_store_rows(m, pick, 4, b, &e) == PKM_OK &&
               memcmp(a, b, sizeof a) == 0, "resident rows: %s", e.message);
        EXPECT(pkm_store_rows(n, pick, 4, c, &e) == PKM_OK && memcmp(b, c, sizeof b) == 0, "rows without the background check: %s", e.message);
        /* A resident table is checked at open; this zstd one checks its shards at every decode. */
        int32_t checked = -1;
        EXPECT(pkm_store_wait_checked(r, 0, &checked, &e) == PKM_OK && checked == 1, "resident wait_checked: %d %s", checked, e.message);
        EXPECT(pkm_store_wait_checked(m, 0.5, &checked, &e) == PKM_OK && checked == 0, "zstd wait_checked: %d %s", checked, e.message);
        expect_error(pkm_store_wait_checked(m, -1, &checked, &e), &e, PKM_ERR_ARGUMENT, "wait_checked negative timeout");
        expect_error(pkm_store_wait_checked(m, NAN, &checked, &e), &e, PKM_ERR_ARGUMENT, "wait_checked NaN timeout");
        expect_error(pkm_store_wait_checked(m, 0, NULL, &e), &e, PKM_ERR_ARGUMENT, "wait_checked NULL out");
        pkm_store_close(r, &e);
        pkm_store_close(m, &e);
        pkm_store_close(n, &e);
        expect_error(pkm_store_wait_checked(n, 0, &checked, &e), &e, PKM_ERR_HANDLE, "wait_checked closed handle");
    }
    EXPECT(pkm_store_open("/nonexistent/x.pkm", 0, &s, NULL) == PKM_ERR_NOT_FOUND, "a NULL error pointer is allowed");

    EXPECT(pkm_store_open(path, 1 << 20, &s, &e) == PKM_OK && e.code == PKM_OK && e.message[0] == 0, "open: %s", e.message);
    pkm_layout layout;
    EXPECT(pkm_store_layout(s, &layout, &e) == PKM_OK && layout.complete == 1 && layout.rows > 0, "layout: %s", e.message);
    const size_t dim = (size_t)layout.dim;

    /* Rows and the reduce. */
    int64_t idx[3] = {0, layout.rows - 1, 7};
    float *rows = calloc(3 * dim, sizeof(float)), *out = calloc(4 * dim, sizeof(float));
    EXPECT(pkm_store_rows(s, idx, 3, rows, &e) == PKM_OK, "rows: %s", e.message);
    float w[3] = {1, 0, 0};
    EXPECT(pkm_store_gather_reduce(s, idx, w, 3, 1, NULL, 1, out, &e) == PKM_OK, "reduce: %s", e.message);
    for (size_t j = 0; j < dim; j++) EXPECT(fabsf(out[j] - rows[j]) <= 1e-6f * fabsf(rows[j]), "reduce of one row, element %zu", j);
    int64_t far[1] = {layout.rows};
    expect_error(pkm_store_rows(s, far, 1, rows, &e), &e, PKM_ERR_ARGUMENT, "row out of range");
    expect_error(pkm_store_rows(s, NULL, 1, rows, &e), &e, PKM_ERR_ARGUMENT, "rows NULL indices");
    EXPECT(pkm_store_rows(s, NULL, 0, NULL, &e) == PKM_OK, "no rows is no work: %s", e.message);
    expect_error(pkm_store_rows(s, idx, (size_t)-1, rows, &e), &e, PKM_ERR_ARGUMENT, "rows count too large");
    int64_t targets[3] = {0, 1, 9};
    expect_error(pkm_store_gather_reduce(s, idx, w, 3, 1, targets, 4, out, &e), &e, PKM_ERR_ARGUMENT, "target past outputs");
    expect_error(pkm_store_gather_reduce(s, idx, w, 3, 1, NULL, 0, out, &e), &e, PKM_ERR_ARGUMENT, "zero outputs");
    expect_error(pkm_store_gather_reduce(s, idx, w, 3, dim + 1, NULL, 1, out, &e), &e, PKM_ERR_ARGUMENT, "chunks not dividing dim");

    /* Tensors and text buffers. */
    size_t needed = 0;
    expect_error(pkm_store_tensor_names(s, NULL, 0, &needed, &e), &e, PKM_ERR_BUFFER, "names into no buffer");
    EXPECT(needed > 1, "names size %zu", needed);
    char *names = malloc(needed);
    EXPECT(pkm_store_tensor_names(s, names, needed, NULL, &e) == PKM_OK && strstr(names, "layers/layer1/row_keys\n"), "names: %s", e.message);
    char tiny[4];
    expect_error(pkm_store_tensor_names(s, tiny, sizeof tiny, NULL, &e), &e, PKM_ERR_BUFFER, "names into 4 bytes");
    int32_t type = 0, rank = 0;
    int64_t shape[8];
    size_t bytes = 0;
    EXPECT(pkm_store_tensor_info(s, "layers/layer0/row_keys", &type, &rank, shape, &bytes, &e) == PKM_OK && type == PKM_F32 && rank == 4,
           "tensor info: %s", e.message);
    void *data = malloc(bytes);
    EXPECT(pkm_store_tensor_read(s, "layers/layer0/row_keys", data, bytes, &e) == PKM_OK, "tensor read: %s", e.message);
    expect_error(pkm_store_tensor_read(s, "layers/layer0/row_keys", data, bytes - 1, &e), &e, PKM_ERR_ARGUMENT, "tensor into a short buffer");
    expect_error(pkm_store_tensor_info(s, "missing", &type, &rank, shape, &bytes, &e), &e, PKM_ERR_NOT_FOUND, "missing tensor");
    expect_error(pkm_store_tensor_info(s, NULL, &type, &rank, shape, &bytes, &e), &e, PKM_ERR_ARGUMENT, "NULL tensor name");
    char layers[64];
    EXPECT(pkm_store_layer_names(s, layers, sizeof layers, NULL, &e) == PKM_OK && strcmp(layers, "layer0\nlayer1\n") == 0,
           "layer names: %s", e.message);
    expect_error(pkm_store_layer_names(s, tiny, sizeof tiny, NULL, &e), &e, PKM_ERR_BUFFER, "layer names into 4 bytes");
    pkm_layer shared = 0;
    EXPECT(pkm_store_layer_open(s, "layer0", 1, &shared, &e) == PKM_OK, "a layer of the open store: %s", e.message);
    expect_error(pkm_store_layer_open(s, NULL, 1, &shared, &e), &e, PKM_ERR_NOT_FOUND, "the only layer of two, from the store");
    expect_error(pkm_store_layer_open(0, "layer0", 1, &shared, &e), &e, PKM_ERR_HANDLE, "a layer of no store");
    int64_t problems = -1;
    char report[256];
    EXPECT(pkm_store_verify(s, &problems, report, sizeof report, &e) == PKM_OK && problems == 0, "verify: %s", e.message);

    /* A closed store and made-up handles. */
    EXPECT(pkm_store_close(s, &e) == PKM_OK, "close: %s", e.message);
    expect_error(pkm_store_close(s, &e), &e, PKM_ERR_HANDLE, "close twice");
    expect_error(pkm_store_rows(s, idx, 3, rows, &e), &e, PKM_ERR_HANDLE, "rows of a closed store");
    {   /* The layer opened from the store keeps serving once the store's handle is closed. */
        pkm_layer_info shared_info;
        EXPECT(pkm_layer_describe(shared, &shared_info, &e) == PKM_OK, "describe a layer of a closed store: %s", e.message);
        size_t n = (size_t)(shared_info.heads * 2 * shared_info.key_dim);
        float *sq = calloc(n, sizeof(float)), *so = malloc((size_t)shared_info.output_dim * sizeof(float));
        for (size_t i = 0; i < n; i++) sq[i] = (float)(i % 5) - 2.0f;
        EXPECT(pkm_layer_lookup(shared, sq, 1, so, NULL, NULL, &e) == PKM_OK, "lookup on a layer of a closed store: %s", e.message);
        EXPECT(pkm_layer_close(shared, &e) == PKM_OK, "close the shared layer: %s", e.message);
        free(sq); free(so);
    }
    expect_error(pkm_store_layout(0, &layout, &e), &e, PKM_ERR_HANDLE, "handle 0");
    expect_error(pkm_store_layout(0xDEADBEEF, &layout, &e), &e, PKM_ERR_HANDLE, "made-up handle");

    /* A layer. */
    pkm_layer l = 0;
    expect_error(pkm_layer_open_named(path, "layer1", -1, 0, &l, &e), &e, PKM_ERR_ARGUMENT, "negative threads");
    expect_error(pkm_layer_open(path, 2, 0, &l, &e), &e, PKM_ERR_NOT_FOUND, "the only layer of a store of two");
    EXPECT(strstr(e.message, "layer0, layer1") != NULL, "the message names the layers: %s", e.message);
    expect_error(pkm_layer_open_named(path, "nope", 2, 0, &l, &e), &e, PKM_ERR_NOT_FOUND, "an unknown layer");
    expect_error(pkm_layer_open_named(path, "../layer0", 2, 0, &l, &e), &e, PKM_ERR_NOT_FOUND, "a layer name with a path");
    expect_error(pkm_layer_open_named(path, "\xff\xfe", 2, 0, &l, &e), &e, PKM_ERR_NOT_FOUND, "a layer name that is not UTF-8");
    EXPECT(pkm_layer_open_named(path, "layer1", 2, 1 << 20, &l, &e) == PKM_OK, "layer open: %s", e.message);
    pkm_layer_info info;
    EXPECT(pkm_layer_describe(l, &info, &e) == PKM_OK && info.heads > 0, "describe: %s", e.message);
    size_t batch = 5, per = (size_t)(info.heads * 2 * info.key_dim), slots = batch * (size_t)(info.heads * info.top_k);
    float *q = malloc(batch * per * sizeof(float));
    for (size_t i = 0; i < batch * per; i++) q[i] = (float)((i * 7919) % 97) / 97.0f - 0.5f;
    float *o = malloc(batch * (size_t)info.output_dim * sizeof(float)), *sw = malloc(slots * (size_t)info.cores * sizeof(float));
    int64_t *si = malloc(slots * sizeof(int64_t));
    EXPECT(pkm_layer_lookup(l, q, batch, o, si, sw, &e) == PKM_OK, "lookup: %s", e.message);
    EXPECT(pkm_layer_lookup(l, q, batch, o, NULL, NULL, &e) == PKM_OK, "lookup without slots: %s", e.message);
    EXPECT(pkm_layer_search(l, q, batch, si, sw, &e) == PKM_OK, "search: %s", e.message);
    for (size_t i = 0; i < slots; i++) EXPECT(si[i] >= 0 && si[i] < info.virtual_slots, "slot %zu is %lld", i, (long long)si[i]);
    expect_error(pkm_layer_lookup(l, q, 0, o, si, sw, &e), &e, PKM_ERR_ARGUMENT, "batch 0");
    expect_error(pkm_layer_lookup(l, NULL, batch, o, si, sw, &e), &e, PKM_ERR_ARGUMENT, "NULL queries");
    expect_error(pkm_layer_lookup(l, q, batch, o, si, NULL, &e), &e, PKM_ERR_ARGUMENT, "indices without weights");
    q[3] = NAN;
    expect_error(pkm_layer_lookup(l, q, batch, o, si, sw, &e), &e, PKM_ERR_ARGUMENT, "a NaN query");
    EXPECT(strstr(e.message, "query 0") != NULL, "the NaN's query is named: %s", e.message);
    expect_error(pkm_layer_lookup(l, q, (size_t)1 << 62, o, si, sw, &e), &e, PKM_ERR_ARGUMENT, "a batch too large to size");
    EXPECT(pkm_layer_config_json(l, NULL, 0, &needed, &e) == PKM_ERR_BUFFER && needed > 10, "config size");
    char *json = malloc(needed);
    EXPECT(pkm_layer_config_json(l, json, needed, NULL, &e) == PKM_OK && strstr(json, "\"topK\""), "config: %s", e.message);
    EXPECT(pkm_layer_close(l, &e) == PKM_OK, "layer close: %s", e.message);
    expect_error(pkm_layer_search(l, q, batch, si, sw, &e), &e, PKM_ERR_HANDLE, "search on a closed layer");

    /* A split table: the lookup in three steps over the parts (address, each part's sums, project) equals the store's. */
    {
        char dir[4096], part[4200];
        snprintf(dir, sizeof dir, "%s.split", path);
        expect_error(pkm_split(path, dir, 2, "columns", &e), &e, PKM_ERR_ARGUMENT, "an unknown axis");
        EXPECT(pkm_split(path, dir, 2, "rows", &e) == PKM_OK, "split: %s", e.message);
        expect_error(pkm_split(path, dir, 2, "rows", &e), &e, PKM_ERR_ARGUMENT, "a split into an existing directory");
        q[3] = 0.25f;
        pkm_layer whole = 0, searcher = 0;
        EXPECT(pkm_layer_open_named(path, "layer1", 1, 0, &whole, &e) == PKM_OK, "layer open: %s", e.message);
        EXPECT(pkm_layer_lookup(whole, q, batch, o, si, sw, &e) == PKM_OK, "lookup: %s", e.message);
        pkm_store parts[2] = {0, 0};
        int64_t first[2] = {0, 0};
        for (int k = 0; k < 2; k++) {
            snprintf(part, sizeof part, "%s/part-%d.pkm", dir, k);
            EXPECT(pkm_store_open(part, 1 << 20, &parts[k], &e) == PKM_OK, "open part %d: %s", k, e.message);
            char record[1024];
            EXPECT(pkm_store_part_json(parts[k], record, sizeof record, NULL, &e) == PKM_OK && strstr(record, "\"axis\":\"rows\""),
                   "part record %d: %s", k, e.message);
            const char *f = strstr(record, "\"first\":");
            if (f) first[k] = strtoll(f + 8, NULL, 10);
        }
        EXPECT(first[0] == 0 && first[1] == 2048, "parts start at rows %lld and %lld", (long long)first[0], (long long)first[1]);
        EXPECT(pkm_store_layer_open(parts[1], "layer1", 1, &searcher, &e) == PKM_OK, "a part's layer: %s", e.message);
        expect_error(pkm_layer_lookup(searcher, q, batch, o, si, sw, &e), &e, PKM_ERR_ARGUMENT, "a lookup on a part alone");
        int64_t *ps = malloc(slots * sizeof(int64_t)), *rowsAt = malloc(slots * sizeof(int64_t)), *proj = malloc(slots * sizeof(int64_t));
        int64_t *local = malloc(slots * sizeof(int64_t)), *target = malloc(slots * sizeof(int64_t));
        float *pw = malloc(slots * (size_t)info.cores * sizeof(float)), *lw = malloc(slots * (size_t)info.cores * sizeof(float));
        size_t sumCount = batch * (size_t)(info.expansion * info.value_dim);
        float *sums = calloc(sumCount, sizeof(float)), *o2 = malloc(batch * (size_t)info.output_dim * sizeof(float));
        EXPECT(pkm_layer_search(searcher, q, batch, ps, pw, &e) == PKM_OK, "search a part: %s", e.message);
        EXPECT(memcmp(ps, si, slots * sizeof(int64_t)) == 0 && memcmp(pw, sw, slots * (size_t)info.cores * sizeof(float)) == 0,
               "a part searches as the whole store does");
        EXPECT(pkm_layer_address(searcher, ps, slots, rowsAt, proj, &e) == PKM_OK, "address: %s", e.message);
        for (int k = 0; k < 2; k++) {
            size_t n = 0;
            for (size_t i = 0; i < slots; i++) {
                int owner = rowsAt[i] >= first[1];
                if (owner != k) continue;
                local[n] = rowsAt[i] - first[k];
                target[n] = (int64_t)(i / (size_t)(info.heads * info.top_k)) * info.expansion + proj[i];
                memcpy(lw + n * (size_t)info.cores, pw + i * (size_t)info.cores, (size_t)info.cores * sizeof(float));
                n++;
            }
            EXPECT(pkm_store_gather_reduce(parts[k], local, lw, n, (size_t)info.cores, target, batch * (size_t)info.expansion, sums, &e) == PKM_OK,
                   "part %d sums: %s", k, e.message);
        }
        EXPECT(pkm_layer_project(searcher, sums, batch, o2, &e) == PKM_OK, "project: %s", e.message);
        for (size_t i = 0; i < batch * (size_t)info.output_dim; i++)
            EXPECT(fabsf(o2[i] - o[i]) <= 1e-5f * (1.0f + fabsf(o[i])), "output %zu: %g over the parts, %g from the store", i, o2[i], o[i]);
        int64_t bad[1] = {info.virtual_slots};
        expect_error(pkm_layer_address(searcher, bad, 1, rowsAt, proj, &e), &e, PKM_ERR_ARGUMENT, "a slot past the layer's");
        expect_error(pkm_layer_project(searcher, sums, 0, o2, &e), &e, PKM_ERR_ARGUMENT, "project batch 0");
        EXPECT(pkm_layer_close(searcher, &e) == PKM_OK && pkm_layer_close(whole, &e) == PKM_OK, "close: %s", e.message);
        for (int k = 0; k < 2; k++) pkm_store_close(parts[k], &e);
        free(ps); free(rowsAt); free(proj); free(local); free(target); free(pw); free(lw); free(sums); free(o2);
    }

    {   /* A gated layer (Spec/RETRIEVAL.md, "Gates"; E = 1, identity addressing, no projectors):
         * out[b] = sum over slots of w · gelu(u[b] · row[v..v+g]) · row[0..v], from the rows. */
        pkm_layer g = 0;
        EXPECT(pkm_layer_open(argv[2], 1, 0, &g, &e) == PKM_OK, "gated layer open: %s", e.message);
        pkm_layer_info gi;
        EXPECT(pkm_layer_describe(g, &gi, &e) == PKM_OK, "describe: %s", e.message);
        const size_t gv = (size_t)gi.value_dim, gd = 4, gslots = (size_t)(gi.heads * gi.top_k);
        size_t gper = (size_t)(gi.heads * 2 * gi.key_dim);
        float *gq = malloc(2 * gper * sizeof(float)), u[2 * 4], *go = malloc(2 * gv * sizeof(float));
        for (size_t i = 0; i < 2 * gper; i++) gq[i] = (float)((i * 104729) % 89) / 89.0f - 0.5f;
        for (size_t i = 0; i < 2 * gd; i++) u[i] = (float)((int)(i % 5) - 2) * 0.25f;
        int64_t *gi_slots = malloc(2 * gslots * sizeof(int64_t));
        float *gw = malloc(2 * gslots * sizeof(float)), *grow = malloc((gv + gd) * sizeof(float));
        expect_error(pkm_layer_lookup(g, gq, 2, go, NULL, NULL, &e), &e, PKM_ERR_ARGUMENT, "a gated lookup without gate inputs");
        EXPECT(strstr(e.message, "gate inputs") != NULL, "the missing gate inputs are named: %s", e.message);
        expect_error(pkm_layer_lookup_gated(g, gq, 2, NULL, go, NULL, NULL, &e), &e, PKM_ERR_ARGUMENT, "NULL gate inputs");
        EXPECT(pkm_layer_lookup_gated(g, gq, 2, u, go, gi_slots, gw, &e) == PKM_OK, "gated lookup: %s", e.message);
        pkm_store gs = 0;
        EXPECT(pkm_store_open(argv[2], 0, &gs, &e) == PKM_OK, "open: %s", e.message);
        /* The same gates from the store alone, as a part of a split table computes them. */
        int64_t *gq_of = malloc(2 * gslots * sizeof(int64_t));
        float *gates = malloc(2 * gslots * sizeof(float));
        for (size_t i = 0; i < 2 * gslots; i++) gq_of[i] = (int64_t)(i / gslots);
        EXPECT(pkm_store_gate_scores(gs, gi_slots, 2 * gslots, gv, gd, u, 2 * gd, gq_of, "gelu", gates, &e) == PKM_OK,
               "gate scores: %s", e.message);
        expect_error(pkm_store_gate_scores(gs, gi_slots, 2 * gslots, gv, gd, u, 2 * gd, gq_of, "tanh", gates, &e), &e,
                     PKM_ERR_ARGUMENT, "an unknown gate activation");
        expect_error(pkm_store_gate_scores(gs, gi_slots, 2 * gslots, gv + 1, gd, u, 2 * gd, gq_of, "gelu", gates, &e), &e,
                     PKM_ERR_ARGUMENT, "gate columns past the row");
        gq_of[0] = 2;
        expect_error(pkm_store_gate_scores(gs, gi_slots, 2 * gslots, gv, gd, u, 2 * gd, gq_of, "gelu", gates, &e), &e,
                     PKM_ERR_ARGUMENT, "a query without a gate input");
        for (size_t b = 0; b < 2; b++) {
            double expected[64] = {0};
            for (size_t k = 0; k < gslots; k++) {
                EXPECT(pkm_store_rows(gs, &gi_slots[b * gslots + k], 1, grow, &e) == PKM_OK, "row: %s", e.message);
                float dot = 0;
                for (size_t j = 0; j < gd; j++) dot += u[b * gd + j] * grow[gv + j];
                const double gate = 0.5 * dot * (1 + erf(dot / sqrt(2.0)));
                EXPECT(fabs(gates[b * gslots + k] - gate) <= 1e-5 * (1 + fabs(gate)), "gate %zu,%zu: %g, expected %g",
                       b, k, gates[b * gslots + k], gate);
                for (size_t j = 0; j < gv && j < 64; j++) expected[j] += gw[b * gslots + k] * gate * grow[j];
            }
            for (size_t j = 0; j < gv && j < 64; j++)
                EXPECT(fabs(go[b * gv + j] - expected[j]) <= 1e-4 * (1 + fabs(expected[j])), "gated output %zu,%zu: %g, expected %g",
                       b, j, go[b * gv + j], expected[j]);
        }
        u[1] = INFINITY;
        expect_error(pkm_layer_lookup_gated(g, gq, 2, u, go, NULL, NULL, &e), &e, PKM_ERR_ARGUMENT, "an infinite gate input");
        pkm_layer plain = 0;
        EXPECT(pkm_layer_open_named(path, "layer0", 1, 0, &plain, &e) == PKM_OK, "layer open: %s", e.message);
        expect_error(pkm_layer_lookup_gated(plain, q, 1, u, o, NULL, NULL, &e), &e, PKM_ERR_ARGUMENT, "gate inputs for an ungated layer");
        pkm_layer_close(plain, &e);
        pkm_layer_close(g, &e);
        pkm_store_close(gs, &e);
        free(gq); free(go); free(gi_slots); free(gw); free(grow); free(gq_of); free(gates);
    }

    /* Import and export misuse. */
    expect_error(pkm_import("/tmp/never.pkm", "/nonexistent.safetensors", NULL, &e), &e, PKM_ERR_INPUT, "import of a missing file");
    expect_error(pkm_import("/tmp/never.pkm", path, "{\"topk\": \"many\"}", &e), &e, PKM_ERR_ARGUMENT, "bad options JSON");
    expect_error(pkm_export("/nonexistent/x.pkm", "/tmp/x.safetensors", &e), &e, PKM_ERR_NOT_FOUND, "export of a missing store");
    expect_error(pkm_export(path, "/tmp/pkm-capi-never.safetensors", &e), &e, PKM_ERR_NOT_FOUND, "export of one of two layers unnamed");
    expect_error(pkm_export_layer(path, "nope", "/tmp/pkm-capi-never.safetensors", &e), &e, PKM_ERR_NOT_FOUND, "export of an unknown layer");

    free(rows); free(out); free(names); free(data); free(q); free(o); free(sw); free(si); free(json);
    if (failures) { fprintf(stderr, "%d checks failed\n", failures); return 1; }
    printf("capi_check: every check passed\n");
    return 0;
}
