/*
 * pkmstore.h: the C API of the product-key memory store (libpkmstore).
 *
 * Ownership and threads:
 *  - Stores and layers are handles (pkm_store, pkm_layer): numbers, never pointers. A handle
 *    stays valid until it is closed; a closed or made-up handle gives PKM_ERR_HANDLE, never a
 *    crash. Every function may be called from any thread at the same time as any other, on the
 *    same handle or not; closing a handle while another thread uses it lets that call finish.
 *  - Every pointer argument is borrowed for the call only: the library never keeps one.
 *    Input arrays are read, output arrays are written (or added into, where said) and must be
 *    allocated by the caller with the sizes stated; nothing the library returns needs freeing.
 *  - Arrays are C-contiguous and native-endian: float is IEEE float32, int64_t indices.
 *  - `error` may be NULL; when given it is set on failure (code and a NUL-terminated UTF-8
 *    message naming the problem, truncated to fit) and cleared (code PKM_OK, empty message)
 *    on success. Every function that can fail returns its status code.
 *  - After fork(), the child may use and close handles its parent opened, and open its own;
 *    nothing it does reaches the parent's handles (LMDB's are used and released only by the
 *    process that made them). Where another process may write the store meanwhile, open it
 *    again in the child: an inherited handle's reads are covered in the parent's name.
 */
#ifndef PKMSTORE_H
#define PKMSTORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PKM_API_VERSION 6

/* Status codes. */
enum {
    PKM_OK = 0,
    PKM_ERR_ARGUMENT = 1,    /* a bad argument: NULL pointer, wrong shape, size or value */
    PKM_ERR_HANDLE = 2,      /* an unknown or closed handle */
    PKM_ERR_NOT_FOUND = 3,   /* no store at the path, or no such tensor */
    PKM_ERR_CORRUPT = 4,     /* damaged store data (the message names shard, row, tensor or record) */
    PKM_ERR_INCOMPLETE = 5,  /* the store's import has not finished */
    PKM_ERR_UNSUPPORTED = 6, /* a newer format version, or a store that is not a memory layer */
    PKM_ERR_STORAGE = 7,     /* the disk, the file system or LMDB failed (for example a full disk) */
    PKM_ERR_INPUT = 8,       /* a tensor file (safetensors, .npy) brought to import is invalid */
    PKM_ERR_BUFFER = 9       /* a caller's text buffer is too small (the size needed is returned) */
};

typedef struct pkm_error {
    int32_t code;
    char message[1024];
} pkm_error;

typedef uint64_t pkm_store; /* 0 is never a valid handle */
typedef uint64_t pkm_layer;

/* Element types: the codes of Spec/FORMAT.md. Value tables hold f32, f16 or bf16. */
enum { PKM_F32 = 1, PKM_F16 = 2, PKM_BF16 = 3, PKM_I64 = 4, PKM_I32 = 5, PKM_U8 = 6, PKM_I8 = 7 };

typedef struct pkm_layout {
    int64_t rows;            /* rows of the value table */
    int64_t dim;             /* elements per row */
    int64_t rows_per_shard;
    int64_t shard_count;
    int64_t rows_committed;  /* rows readable (all of them when complete) */
    int32_t element_type;    /* PKM_F32, PKM_F16 or PKM_BF16 */
    int32_t codec;           /* 0 raw, 1 zstd, 2 nibble */
    int32_t format_version;
    int32_t complete;        /* 1 when every row is stored */
} pkm_layout;

typedef struct pkm_layer_info {
    int64_t heads;           /* H */
    int64_t key_dim;         /* d: queries are float [batch, H, 2, d] */
    int64_t top_k;           /* k: slots per head */
    int64_t cores;           /* c: weights per slot (multi-core scoring), 1 otherwise */
    int64_t output_dim;      /* outputs are float [batch, output_dim] */
    int64_t value_dim;
    int64_t physical_rows;
    int64_t virtual_slots;
    int64_t expansion;       /* E */
} pkm_layer_info;

/* The library's version string (static storage). */
const char *pkm_version(void);

/* --- Stores ------------------------------------------------------------------------------ */

/* Opens the store at `path` read-only; `cache_bytes` is the decoded-shard budget (0: none), and
 * the budget for a nibble table's slots copied into memory once its background check has checked
 * them all (when they fit; sums keep their bits). */
int pkm_store_open(const char *path, size_t cache_bytes, pkm_store *out, pkm_error *error);

/* Flags of pkm_store_open_with. PKM_OPEN_RESIDENT: decode and check the whole value table at open
 * into memory in huge pages (as much memory as its raw rows) and serve every read from there
 * (Swift: Store.open(resident: true)); the store must be complete. (API version 2.)
 * PKM_OPEN_NO_BACKGROUND_CHECK: no thread checking the table's rows in memory after the first read
 * (Swift: Store.open(checksInBackground: false)), for processes that read little of the table, or
 * many processes over one table; reads still check each row before it is first used. (API version 5.) */
enum { PKM_OPEN_RESIDENT = 1, PKM_OPEN_NO_BACKGROUND_CHECK = 2 };
int pkm_store_open_with(const char *path, size_t cache_bytes, uint32_t flags, pkm_store *out, pkm_error *error);
/* Closes the handle; PKM_ERR_HANDLE when it is not open. */
int pkm_store_close(pkm_store store, pkm_error *error);
/* Waits up to `timeout_seconds` (>= 0) for the background check to finish its pass (it starts with
 * the first read; no wait when none is running), then sets `every_row_checked` to 1 when every row
 * of the value table has been checked since open, so that reads check nothing more (a resident
 * table's at open; never a zstd table's, whose shards are checked at each decode), 0 otherwise:
 * for a server that reads its table once and waits before taking traffic
 * (Swift: Store.waitUntilEveryRowChecked). (API version 6.) */
int pkm_store_wait_checked(pkm_store store, double timeout_seconds, int32_t *every_row_checked, pkm_error *error);
int pkm_store_layout(pkm_store store, pkm_layout *out, pkm_error *error);

/* Rows `indices[0..count)` converted to float into `out` (count x dim floats). */
int pkm_store_rows(pkm_store store, const int64_t *indices, size_t count, float *out, pkm_error *error);

/* The fused lookup-reduce: for each i < count and chunk t < chunks (dim divisible by chunks),
 * out[target_i * dim + t*w + j] += weights[i*chunks + t] * row(indices[i])[t*w + j], w = dim/chunks,
 * target_i = targets ? targets[i] : 0. `out` holds outputs x dim floats (outputs >= 1, every
 * target < outputs) and is added into. */
int pkm_store_gather_reduce(pkm_store store, const int64_t *indices, const float *weights, size_t count,
                            size_t chunks, const int64_t *targets, size_t outputs, float *out, pkm_error *error);

/* The tensor names, each followed by '\n', as a NUL-terminated string in `buffer` of `capacity`
 * bytes; `needed` (may be NULL) receives the bytes required including the NUL. PKM_ERR_BUFFER
 * when it does not fit. */
int pkm_store_tensor_names(pkm_store store, char *buffer, size_t capacity, size_t *needed, pkm_error *error);
/* The element type, rank (<= 8), extents (shape[0..rank)) and byte count of tensor `name`. */
int pkm_store_tensor_info(pkm_store store, const char *name, int32_t *element_type, int32_t *rank,
                          int64_t shape[8], size_t *bytes, pkm_error *error);
/* The tensor's little-endian elements into `out`, which holds exactly `bytes` bytes. */
int pkm_store_tensor_read(pkm_store store, const char *name, void *out, size_t bytes, pkm_error *error);

/* The names of the store's memory layers (Spec/FORMAT.md, "Layers"), each followed by '\n', like
 * pkm_store_tensor_names; empty for a value table alone. (API version 2.) */
int pkm_store_layer_names(pkm_store store, char *buffer, size_t capacity, size_t *needed, pkm_error *error);

/* Checks every shard, tensor and record. `problems` receives how many were found; their
 * messages go to `report` (one per line, NUL-terminated, truncated to `capacity`; may be NULL). */
int pkm_store_verify(pkm_store store, int64_t *problems, char *report, size_t capacity, pkm_error *error);

/* --- Memory layers ----------------------------------------------------------------------- */

/* Opens the store at `path` and serves its only layer with `threads` workers (0: all cores);
 * PKM_ERR_NOT_FOUND, naming the layers, when it holds several. */
int pkm_layer_open(const char *path, int32_t threads, size_t cache_bytes, pkm_layer *out, pkm_error *error);
/* The same for layer `name` (NULL: the only layer). (API version 2.) */
int pkm_layer_open_named(const char *path, const char *name, int32_t threads, size_t cache_bytes, pkm_layer *out,
                         pkm_error *error);
/* Layer `name` (NULL: the only layer) of the open store `store`, sharing its decoded-shard
 * cache with the store's other layers (the way to serve several layers of one store); the
 * layer keeps the store open until both are closed. (API version 2.) */
int pkm_store_layer_open(pkm_store store, const char *name, int32_t threads, pkm_layer *out, pkm_error *error);
int pkm_layer_close(pkm_layer layer, pkm_error *error);
int pkm_layer_describe(pkm_layer layer, pkm_layer_info *out, pkm_error *error);
/* The retrieval parameters (the layer's retrieval record) as JSON, like pkm_store_tensor_names. */
int pkm_layer_config_json(pkm_layer layer, char *buffer, size_t capacity, size_t *needed, pkm_error *error);

/* Selected slots of `batch` queries float [batch, H, 2, d] (taken after the layer's query
 * normalisation): indices int64 [batch, H, k] (virtual slot ids, in rank order per head) and
 * weights float [batch, H, k, c]. */
int pkm_layer_search(pkm_layer layer, const float *queries, size_t batch, int64_t *indices, float *weights,
                     pkm_error *error);
/* Search and lookup-reduce: out float [batch, output_dim] (overwritten); `indices` and
 * `weights` as for pkm_layer_search, or both NULL when not wanted. */
int pkm_layer_lookup(pkm_layer layer, const float *queries, size_t batch, float *out, int64_t *indices,
                     float *weights, pkm_error *error);
/* pkm_layer_lookup for a gated layer (its config JSON's "gateDim" g > 0; Spec/RETRIEVAL.md,
 * "Gates"): `gate_inputs` float [batch, g], one vector per query, read during the call only.
 * pkm_layer_lookup on a gated layer, and this call on another, are PKM_ERR_ARGUMENT. (API version 4.) */
int pkm_layer_lookup_gated(pkm_layer layer, const float *queries, size_t batch, const float *gate_inputs, float *out,
                           int64_t *indices, float *weights, pkm_error *error);

/* --- Split tables (Spec/DISTRIBUTED.md; API version 3) ----------------------------------- */

/* Cuts the complete store at `store_path` into `parts` part stores along `axis` ("rows" or
 * "dims") in the new directory `directory` (part-K.pkm and split.json), as memtool split does. */
int pkm_split(const char *store_path, const char *directory, size_t parts, const char *axis, pkm_error *error);
/* The store's part record (Spec/FORMAT.md, "Parts") as JSON, like pkm_store_tensor_names; the
 * empty string when the store is not a part of a split table. */
int pkm_store_part_json(pkm_store store, char *buffer, size_t capacity, size_t *needed, pkm_error *error);
/* The gates of a gated layer's slots whose rows this store holds (Spec/RETRIEVAL.md, "Gates"):
 * scores[i] = act(sum over j < width of inputs[queries[i] * width + j] * row(indices[i])[column + j]),
 * act "none" or "gelu"; `inputs` holds input_count floats, a whole number of gate inputs of
 * `width`, each query < input_count / width. For a part of a split table: multiply each slot's
 * weights by its gate before pkm_store_gather_reduce. (API version 4.) */
int pkm_store_gate_scores(pkm_store store, const int64_t *indices, size_t count, size_t column, size_t width,
                          const float *inputs, size_t input_count, const int64_t *queries, const char *activation,
                          float *scores, pkm_error *error);
/* The reduce of a lookup in three steps, for tables whose rows are summed elsewhere: the value
 * table row and the projector of each of `count` virtual slots (rows and projectors int64
 * [count]; a slot outside 0..virtual_slots-1 is PKM_ERR_ARGUMENT). The layer of a part store
 * searches and addresses; its pkm_layer_lookup is refused. */
int pkm_layer_address(pkm_layer layer, const int64_t *slots, size_t count, int64_t *rows, int64_t *projectors, pkm_error *error);
/* The layer's output float [batch, output_dim] (overwritten) from `sums` float [batch, E, value_dim]:
 * per query and projector e, the weighted sum of its selected rows (pkm_store_gather_reduce with
 * targets query * E + e), times projector e, summed over e; the sums themselves without projectors. */
int pkm_layer_project(pkm_layer layer, const float *sums, size_t batch, float *out, pkm_error *error);

/* --- Import and export ------------------------------------------------------------------- */

/* Imports the trained layer at `source` (a .safetensors file or a directory of .npy files, the
 * tensor names of Spec/RETRIEVAL.md) into a store at `store_path`, creating it or resuming an
 * interrupted import, as `memtool import` does. `options_json` (may be NULL) is a JSON object
 * with any of: "rename" {canonical: name in the file}, "scoring", "topk", "top_m",
 * "activation", "addressing", "address_key", "dtype", "codec", "level", "rows_per_shard",
 * "dictionary" (bool), "threads", "layout" ("store", "pkm-pytorch" or "meta-memory": how the
 * checkpoint holds the layer, as memtool import --layout), and (API version 2) "layer" (its
 * name; naming a layer that a complete store at `store_path` lacks adds it), "values_from_store"
 * (bool), "window", "pool_offset" (as memtool import's flags), and (API version 4) "gate_dim",
 * "gate_activation" ("none" or "gelu"; memtool import's --gate-dim and --gate-activation). */
int pkm_import(const char *store_path, const char *source, const char *options_json, pkm_error *error);
/* Writes the store's layer to a safetensors file at `destination`, as `memtool export` does: whole
   or not at all, never over a store or its lock file (PKM_ERR_ARGUMENT); a full disk or device is
   PKM_ERR_STORAGE. */
int pkm_export(const char *store_path, const char *destination, pkm_error *error);
/* The same for layer `layer` (NULL: the only layer). (API version 2.) */
int pkm_export_layer(const char *store_path, const char *layer, const char *destination, pkm_error *error);

#ifdef __cplusplus
}
#endif

#endif
