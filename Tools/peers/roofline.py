#!/usr/bin/env python3
"""The machine's limits for a key search, measured now: sgemm GFLOP/s (numpy's BLAS, THREADS
threads, a [256, d] x [d, n] product as a batch-256 search does) and the two-thread rate of
streaming float32 keys (each thread sums half of a table of the given size).

    roofline.py KEY_BYTES DIM [--threads T]

Prints one JSON line: sgemm_gflops, key_scan_gbps.
"""
import argparse
import json
import os
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("key_bytes", type=int); ap.add_argument("dim", type=int); ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
os.environ.setdefault("OPENBLAS_NUM_THREADS", str(a.threads))
import numpy as np  # noqa: E402  (after the thread count is set)


def best(f, repeat=5):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return min(times)


rng = np.random.default_rng(1)
n = 32768
q = rng.standard_normal((256, a.dim), np.float32)
keys = rng.standard_normal((a.dim, n), np.float32)
gemm = best(lambda: q @ keys)
table = np.ones(max(a.key_bytes // 4, 1 << 20), np.float32)
halves = np.array_split(table, a.threads)


def scan():
    workers = [threading.Thread(target=np.add.reduce, args=(h,)) for h in halves]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


scan()
seconds = best(scan)
print(json.dumps({"sgemm_gflops": 2 * 256 * a.dim * n / gemm / 1e9, "key_scan_gbps": table.nbytes / seconds / 1e9,
                  "threads": a.threads, "key_bytes": int(table.nbytes)}))
