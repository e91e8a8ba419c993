#!/usr/bin/env python3
"""The store's reduce and PyTorch's embedding_bag taking turns in one process, one thread each.

    reduce_interleaved.py STORE FLAT REDUCED [--batch 256] [--rounds 15]

STORE is a raw bf16 store, FLAT its bench flat copy (STORE.flat) and REDUCED the prefix `memtool
bench --reduced-rows` wrote, as for Tools/peers/embedding_bag.py. Each round runs every batch
through the store (pkmstore, the C API: one gather-reduce call a batch, each row's output row its
query) and then through embedding_bag over the flat copy, and takes the ratio of the two rates:
on a VM whose speed moves by 2x between runs a minute apart (BENCHMARKS.md), the ratio of two
passes a few milliseconds apart is steadier than that of two processes. The first batch of the
two is compared. The rounds begin once the store's background check has finished (`wait_checked`).
Prints one JSON line: the median, lowest and highest per-round ratio, the median rates, and
whether every row had been checked before the rounds.
"""
import argparse
import json
import statistics
import time
import warnings

import numpy as np
import pkmstore
import torch

ap = argparse.ArgumentParser()
ap.add_argument("store"); ap.add_argument("flat"); ap.add_argument("reduced")
ap.add_argument("--batch", type=int, default=256); ap.add_argument("--rounds", type=int, default=15)
a = ap.parse_args()
torch.set_num_threads(1)

store = pkmstore.open(a.store, cache_bytes=0)
rows_in_table, dim = store.layout.rows, store.layout.dim
mapped = np.memmap(a.flat, dtype=np.int16, mode="r", shape=(rows_in_table, dim))
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the map is read-only; embedding_bag never writes its weight
    table = torch.frombuffer(mapped, dtype=torch.bfloat16).view(rows_in_table, dim)

rows = np.load(a.reduced + ".rows.npy")
weights = np.load(a.reduced + ".weights.npy").astype(np.float32)
queries, bag = rows.shape
batches = []
for start in range(0, queries - a.batch + 1, a.batch):
    idx = np.ascontiguousarray(rows[start:start + a.batch]).reshape(-1)
    w = np.ascontiguousarray(weights[start:start + a.batch]).reshape(-1)
    batches.append((idx, w, torch.from_numpy(idx), torch.from_numpy(w).to(torch.bfloat16)))
targets = np.repeat(np.arange(a.batch, dtype=np.int64), bag)
offsets = torch.arange(0, a.batch * bag, bag)
out = np.zeros((a.batch, dim), np.float32)


def store_pass():
    for idx, w, _, _ in batches:
        out.fill(0)
        store.gather_reduce(idx, w, targets=targets, outputs=a.batch, out=out)


def peer_pass():
    for _, _, idx, w in batches:
        torch.nn.functional.embedding_bag(idx, table, offsets, mode="sum", per_sample_weights=w)


# Both compute the same sums: the first batch, to embedding_bag's bf16 weights and output.
idx, w, tidx, tw = batches[0]
mine = store.gather_reduce(idx, w, targets=targets, outputs=a.batch)
theirs = torch.nn.functional.embedding_bag(tidx, table, offsets, mode="sum", per_sample_weights=tw).float().numpy()
scale = np.abs(mine).max() + 1e-30
worst = float(np.max(np.abs(mine - theirs)) / scale)
assert worst < 2e-2, f"the store and embedding_bag disagree: {worst}"

total = len(batches) * a.batch * bag
store_pass(); peer_pass()  # every row read once by each before the rounds (the store's first reads check rows)
# As memtool bench does: the rounds begin once the store's background check has checked the rows
# in memory, as a long-running reader's reads do (while it runs it shares the memory system).
t = time.perf_counter()
every_row_checked = store.wait_checked(600)
check_wait = time.perf_counter() - t
ratios, store_rates, peer_rates = [], [], []
for _ in range(a.rounds):
    t = time.perf_counter(); store_pass(); s = total / (time.perf_counter() - t)
    t = time.perf_counter(); peer_pass(); p = total / (time.perf_counter() - t)
    ratios.append(s / p); store_rates.append(s); peer_rates.append(p)
print(json.dumps({"store": a.store, "rows": rows_in_table, "batch": a.batch, "rowsPerQuery": bag, "batches": len(batches),
                  "rounds": a.rounds, "threads": 1, "torch": torch.__version__,
                  "storeOverEmbeddingBag": {"median": statistics.median(ratios), "lowest": min(ratios), "highest": max(ratios)},
                  "storeRowsPerSecond": statistics.median(store_rates), "embeddingBagRowsPerSecond": statistics.median(peer_rates),
                  "maxRelativeDifference": worst, "everyRowChecked": every_row_checked,
                  "backgroundCheckWaitMilliseconds": check_wait * 1e3}))
