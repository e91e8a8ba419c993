#!/usr/bin/env python3
"""Peer: PyTorch's embedding_bag (FBGEMM's CPU kernels) reducing the rows a `memtool bench` run reduced.

    embedding_bag.py FLAT DTYPE ROWS DIM REDUCED [--batch B] [--threads T] [--repeat R]

FLAT is the bench's flat copy of the values (STORE.flat: the raw rows, row-major, little-endian,
memory-mapped here as the store's are); DTYPE bf16, f16 or f32; REDUCED the prefix memtool bench
--reduced-rows wrote (REDUCED.rows.npy, int64 [Q, H*k]; REDUCED.weights.npy, float32). Each batch
of B queries is one embedding_bag(mode="sum", per_sample_weights=...) call with one bag per query,
as the store's reduce sums H*k rows per query. The first batch's output is checked against numpy.
Prints one JSON line: rows/s over all batches (best of R passes), per-batch p50/p99 in ms.
"""
import argparse
import json
import time
import warnings

import numpy as np
import torch

ap = argparse.ArgumentParser()
ap.add_argument("flat"); ap.add_argument("dtype", choices=["bf16", "f16", "f32"])
ap.add_argument("rows", type=int); ap.add_argument("dim", type=int); ap.add_argument("reduced")
ap.add_argument("--batch", type=int, default=256); ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--repeat", type=int, default=3)
a = ap.parse_args()
torch.set_num_threads(a.threads)

storage = {"bf16": (np.int16, torch.bfloat16), "f16": (np.float16, torch.float16), "f32": (np.float32, torch.float32)}
np_type, torch_type = storage[a.dtype]
mapped = np.memmap(a.flat, dtype=np_type, mode="r", shape=(a.rows, a.dim))
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the map is read-only; embedding_bag never writes its weight
    table = torch.frombuffer(mapped, dtype=torch_type).view(a.rows, a.dim)

rows = np.load(a.reduced + ".rows.npy")
weights = np.load(a.reduced + ".weights.npy")
queries, bag = rows.shape
batches = []
for start in range(0, queries - a.batch + 1, a.batch):
    idx = torch.from_numpy(np.ascontiguousarray(rows[start:start + a.batch]).reshape(-1))
    w = torch.from_numpy(np.ascontiguousarray(weights[start:start + a.batch]).reshape(-1)).to(torch_type)
    batches.append((idx, w))
offsets = torch.arange(0, a.batch * bag, bag)


def reduce(idx, w):
    return torch.nn.functional.embedding_bag(idx, table, offsets, mode="sum", per_sample_weights=w)


# The peer computes what the store computes: the first batch against numpy in float64.
idx, w = batches[0]
got = reduce(idx, w).float().numpy()
values = np.asarray(table[idx].float().numpy(), dtype=np.float64)
expected = (values * w.float().numpy()[:, None]).reshape(a.batch, bag, a.dim).sum(axis=1)
scale = np.abs(values * w.float().numpy()[:, None]).reshape(a.batch, bag, a.dim).sum(axis=1) + 1e-30
worst = float(np.max(np.abs(got - expected) / scale))
assert worst < 2e-2, f"embedding_bag disagrees with numpy: {worst}"

best, times = None, []
for _ in range(a.repeat):
    pass_times = []
    for idx, w in batches:
        t = time.perf_counter()
        reduce(idx, w)
        pass_times.append(time.perf_counter() - t)
    if best is None or sum(pass_times) < sum(best):
        best = pass_times
times = sorted(best)
total_rows = len(batches) * a.batch * bag
print(json.dumps({"peer": "torch.nn.functional.embedding_bag", "torch": torch.__version__,
                  "cpuCapability": torch.backends.cpu.get_cpu_capability(), "threads": a.threads,
                  "batch": a.batch, "rowsPerQuery": bag, "batches": len(batches),
                  "rowsPerSecond": total_rows / sum(best), "queriesPerSecond": len(batches) * a.batch / sum(best),
                  "batchMilliseconds": {"p50": 1e3 * times[len(times) // 2], "p99": 1e3 * times[min(len(times) - 1, int(0.99 * len(times)))]},
                  "maxRelativeErrorVsNumpy": worst}))
