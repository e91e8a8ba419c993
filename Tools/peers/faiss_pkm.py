#!/usr/bin/env python3
"""Peer: product-key search with FAISS's MultiIndexQuantizer over the same sub-keys.

    faiss_pkm.py STORE QUERIES.npy TOPK [--indices IDX.npy] [--threads T]

STORE is a store (its row_keys and col_keys [H, 1, n, d] are read with Tools/pkmstore_reader.py) or a
.safetensors file holding them (memtool export writes one). PKM ranks slots by
q_row.K_row[i] + q_col.K_col[j]; the MultiIndexQuantizer ranks by L2 distance, so each key is augmented
with sqrt(R^2 - |k|^2) (R the largest key norm) and each query with 0, which makes the L2 ranking equal
the inner-product ranking. One quantizer per head. Prints one JSON line with queries/s (all heads) and,
with --indices (memtool query's), the share of selected slots both agree on.
"""
import argparse
import json
import time

import faiss
import numpy as np

from pkmtools.tensorio import read_safetensors


ap = argparse.ArgumentParser()
ap.add_argument("keys"); ap.add_argument("queries"); ap.add_argument("topk", type=int)
ap.add_argument("--indices"); ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--batch", type=int, help="search in batches of this many queries and report each batch's latency")
a = ap.parse_args()
faiss.omp_set_num_threads(a.threads)


if a.keys.endswith(".safetensors"):
    t = {n: np.asarray(x, np.float32) for n, x in read_safetensors(a.keys, ["row_keys", "col_keys"]).items()}
else:
    from pkmtools.reader import StoreReader
    reader = StoreReader(a.keys)
    # Version 4 keeps a layer's tensors under layers/NAME/ (the first layer here); 1 to 3 under bare names.
    prefix = "" if "row_keys" in reader.tensor_names() else f"layers/{next(iter(reader.layers()))}/"
    t = {name: reader.tensor(prefix + name).astype(np.float32) for name in ("row_keys", "col_keys")}
rk, ck = t["row_keys"][:, 0], t["col_keys"][:, 0]          # [H, n, d]
H, n, d = rk.shape
nbits = int(np.log2(n))
assert 1 << nbits == n and ck.shape[1] == n, "MultiIndexQuantizer needs a square grid of 2^b x 2^b"
q = np.load(a.queries)                                        # [B, H, 2, d]
B = q.shape[0]
quantizers = []
for h in range(H):
    norms = np.concatenate([np.linalg.norm(rk[h], axis=1), np.linalg.norm(ck[h], axis=1)])
    R2 = float(norms.max() ** 2)
    cents = []
    for keys in (rk[h], ck[h]):
        extra = np.sqrt(np.maximum(R2 - (keys ** 2).sum(axis=1), 0))[:, None]
        cents.append(np.hstack([keys, extra]).astype(np.float32))
    miq = faiss.MultiIndexQuantizer(2 * (d + 1), 2, nbits)
    faiss.copy_array_to_vector(np.concatenate(cents).reshape(-1), miq.pq.centroids)
    miq.is_trained = True
    miq.ntotal = n * n
    quantizers.append(miq)
xs = [np.ascontiguousarray(np.concatenate([q[:, h, 0], np.zeros((B, 1), np.float32), q[:, h, 1], np.zeros((B, 1), np.float32)], axis=1))
      for h in range(H)]
batch = a.batch or B
labels = [np.zeros((B, a.topk), np.int64) for _ in range(H)]
latencies = []
start = time.perf_counter()
for b0 in range(0, B, batch):
    t0 = time.perf_counter()
    for h in range(H):
        labels[h][b0:b0 + batch] = quantizers[h].search(xs[h][b0:b0 + batch], a.topk)[1]
    latencies.append(time.perf_counter() - t0)
elapsed = time.perf_counter() - start
result = {"peer": "faiss MultiIndexQuantizer (inner product via augmentation)", "faiss": faiss.__version__,
          "queries": int(B), "queries_per_second": B / elapsed, "batch": batch,
          "batch_p50_ms": float(np.percentile(latencies, 50) * 1e3), "batch_p99_ms": float(np.percentile(latencies, 99) * 1e3)}
if a.indices:
    ours = np.load(a.indices)                                 # vids i * n + j
    agree = 0
    for h in range(H):
        lab = labels[h]
        theirs = (lab % n) * n + lab // n                     # MIQ label = i + j * n (first sub-quantizer fastest)
        agree += sum(len(set(ours[b, h]) & set(theirs[b])) for b in range(B))
    result["agreement"] = agree / ours.size
print(json.dumps(result))
