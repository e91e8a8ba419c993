#!/usr/bin/env python3
"""A nibble store's reduce against the raw store of the same rows, taking turns in one process.

    codecs_interleaved.py RAW NIBBLE [--cache-bytes N] [--rounds 15] [--batches 16] [--threads 1]

RAW and NIBBLE hold the same table (Tools/bench_codecs.sh makes both). Both are opened through
pkmstore (the C API), RAW with no cache and NIBBLE with `--cache-bytes` (the budget that decides
whether its slots are copied into memory, Store.open's cacheBytes; 0 reads them in place). The
same batches of 256 uniform queries x 128 rows (random weights, each query its output row) go
through one store and then the other, once each before the rounds and again once both
background checks have finished, so that the rounds read checked rows; each round times a pass of
each and takes the ratio: on a VM whose speed moves by 2x between runs a minute apart
(BENCHMARKS.md), the ratio of two passes a few milliseconds apart is steadier than that of two
processes. With --threads N each batch's queries are split into N parts reduced at once, one
call a part on threads of this process (the C API runs without Python's lock), as a server's
workers would. Checks that both give the same sums (to float summation order) and prints one line.
"""
import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pkmstore

ap = argparse.ArgumentParser()
ap.add_argument("raw"); ap.add_argument("nibble")
ap.add_argument("--cache-bytes", type=int, default=1 << 30)
ap.add_argument("--rounds", type=int, default=15); ap.add_argument("--batches", type=int, default=16)
ap.add_argument("--threads", type=int, default=1)
a = ap.parse_args()

raw = pkmstore.open(a.raw, cache_bytes=0)
nibble = pkmstore.open(a.nibble, cache_bytes=a.cache_bytes)
rows, dim = raw.layout.rows, raw.layout.dim
assert (nibble.layout.rows, nibble.layout.dim) == (rows, dim), "the two stores hold different tables"
batch, bag = 256, 128
rng = np.random.default_rng(1)
batches = [(rng.integers(0, rows, batch * bag, dtype=np.int64), rng.standard_normal(batch * bag).astype(np.float32))
           for _ in range(a.batches)]
targets = np.repeat(np.arange(batch, dtype=np.int64), bag)
out = np.zeros((batch, dim), np.float32)
# Each part: whole queries, so that parts add into different rows of `out`.
parts = [slice(p * batch // a.threads * bag, (p + 1) * batch // a.threads * bag) for p in range(a.threads)]
pool = ThreadPoolExecutor(a.threads)


def reduce_pass(store):
    for idx, w in batches:
        out.fill(0)
        if a.threads == 1:
            store.gather_reduce(idx, w, targets=targets, outputs=batch, out=out)
        else:
            list(pool.map(lambda p: store.gather_reduce(idx[p], w[p], targets=targets[p], outputs=batch, out=out), parts))


reduce_pass(raw); reduce_pass(nibble)
checked = raw.wait_checked(600) and nibble.wait_checked(600)
reduce_pass(raw); reduce_pass(nibble)
idx, w = batches[0]
mine, theirs = (s.gather_reduce(idx, w, targets=targets, outputs=batch) for s in (nibble, raw))
assert np.allclose(mine, theirs, rtol=1e-5, atol=1e-6), "the two stores give different sums"
total = a.batches * batch * bag
ratios, raw_rates, nibble_rates = [], [], []
for _ in range(a.rounds):
    t = time.perf_counter(); reduce_pass(raw); r = total / (time.perf_counter() - t)
    t = time.perf_counter(); reduce_pass(nibble); n = total / (time.perf_counter() - t)
    ratios.append(n / r); raw_rates.append(r); nibble_rates.append(n)
print(f"{rows} rows, {a.threads} thread(s), nibble cache {a.cache_bytes} bytes: nibble/raw {statistics.median(ratios):.2f} "
      f"({min(ratios):.2f}-{max(ratios):.2f}) of {a.rounds} rounds; raw {statistics.median(raw_rates) / 1e6:.1f}, "
      f"nibble {statistics.median(nibble_rates) / 1e6:.1f} M rows/s; every row checked: {checked}")
