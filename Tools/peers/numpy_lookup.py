#!/usr/bin/env python3
"""Peer: the lookup-reduce a Python user would write with numpy over an np.memmap of the values.

    numpy_lookup.py FLAT_VALUES DTYPE ROWS DIM ADDRESSES.npy WEIGHTS.npy [PROJECTORS.npy] [--reference OUT.npy]

FLAT_VALUES is the raw row-major value table (memtool bench writes it as STORE.flat); ADDRESSES and
WEIGHTS come from `memtool query --addresses --weights`, so the peer reduces exactly the rows the store
did. Prints one JSON line: queries/s of gather + weighted sum (+ projection), and the largest relative
difference from --reference (memtool query's output).
"""
import argparse
import json
import time

import numpy as np

from pkmtools.tensorio import bf16_to_f32

ap = argparse.ArgumentParser()
ap.add_argument("flat"); ap.add_argument("dtype", choices=["f32", "f16", "bf16"]); ap.add_argument("rows", type=int); ap.add_argument("dim", type=int)
ap.add_argument("addresses"); ap.add_argument("weights"); ap.add_argument("projectors", nargs="?")
ap.add_argument("--reference"); ap.add_argument("--batch", type=int, default=256)
a = ap.parse_args()
raw = np.memmap(a.flat, dtype={"f32": np.float32, "f16": np.float16, "bf16": np.uint16}[a.dtype], mode="r", shape=(a.rows, a.dim))
addr, w = np.load(a.addresses), np.load(a.weights)  # [B,H,k,2], [B,H,k,c]
proj = np.load(a.projectors) if a.projectors else None
B, H, k, c = w.shape
E = proj.shape[0] if proj is not None else 1
chunk = a.dim // c
out = []
start = time.perf_counter()
for b0 in range(0, B, a.batch):
    rows = addr[b0:b0 + a.batch, :, :, 0].reshape(-1)
    gathered = raw[rows]                                     # the gather: fancy indexing on the memmap
    if a.dtype == "bf16":
        gathered = bf16_to_f32(gathered)
    gathered = gathered.astype(np.float32).reshape(-1, H * k, c, chunk)
    wb = w[b0:b0 + a.batch].reshape(-1, H * k, c, 1)
    nb = gathered.shape[0]
    pid = addr[b0:b0 + a.batch, :, :, 1].reshape(nb, H * k)
    acc = np.zeros((nb, E, c, chunk), np.float32)
    for p in range(E):                                      # weighted sum per projector
        mask = (pid == p)[:, :, None, None]
        acc[:, p] = (gathered * wb * mask).sum(axis=1)
    acc = acc.reshape(nb, E, a.dim)
    out.append(np.einsum("bpv,pvo->bo", acc, proj) if proj is not None else acc[:, 0])
elapsed = time.perf_counter() - start
out = np.concatenate(out)
result = {"peer": "numpy memmap gather + weighted sum", "queries": int(B), "queries_per_second": B / elapsed}
if a.reference:
    ref = np.load(a.reference)
    result["max_relative_difference"] = float(np.max(np.abs(out - ref) / np.maximum(np.abs(ref), 1e-3)))
print(json.dumps(result))
