#!/usr/bin/env python3
"""Compressed-array peers of the store's codecs: the same bf16 table (a flat file of ROWS x DIM
little-endian bf16, as `memtool bench --flat-path` writes it) stored in tensorstore (zarr v3,
sharding with small inner chunks, blosc zstd + byte shuffle inside) and in blosc2 (small blocks,
zstd + shuffle), then random rows read back from each: the size against the raw values and
random-row rows/s with the files in the page cache (and, as root, after dropping it).

    compressed_arrays.py FLAT ROWS DIM WORKDIR [--reads 262144] [--batch 32768] [--inner 16]

Rows are read in batches of `--batch` random indices through each library's own batched read
(tensorstore's vindex, blosc2's fancy indexing), so that Python's per-call cost is paid once a
batch. Prints one JSON object.
"""
import argparse
import json
import os
import shutil
import subprocess
import time

import numpy as np


def directory_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def drop_caches():
    """Drops the page cache when this process may (root), else returns False."""
    try:
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def timed_reads(read, rows, reads, batch, seed, check):
    rng = np.random.default_rng(seed)
    done, start = 0, time.perf_counter()
    while done < reads:
        idx = rng.integers(0, rows, size=min(batch, reads - done))
        got = read(idx)
        if done == 0:
            check(idx, got)
        done += len(idx)
    return done / (time.perf_counter() - start)


def tensorstore_peer(values, path, inner, shard_rows):
    import tensorstore as ts
    rows, dim = values.shape
    inner_codecs = [{"name": "bytes", "configuration": {"endian": "little"}},
                    {"name": "blosc", "configuration": {"cname": "zstd", "clevel": 3, "shuffle": "shuffle", "typesize": 2}}]
    spec = {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": path},
        "metadata": {
            "shape": [rows, dim], "data_type": "uint16",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [shard_rows, dim]}},
            "codecs": [{"name": "sharding_indexed", "configuration": {
                "chunk_shape": [inner, dim], "codecs": inner_codecs,
                "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]}}],
        },
        "create": True, "delete_existing": True,
    }
    array = ts.open(spec).result()
    for start in range(0, rows, shard_rows):
        array[start:start + shard_rows].write(values[start:start + shard_rows]).result()
    reopened = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": path}}).result()
    return lambda idx: reopened.vindex[idx].read().result()


def blosc2_peer(values, path, inner, chunk_rows):
    import blosc2
    rows, dim = values.shape
    cparams = {"codec": blosc2.Codec.ZSTD, "clevel": 3, "filters": [blosc2.Filter.SHUFFLE], "typesize": 2}
    blosc2.asarray(values, urlpath=path, mode="w", chunks=(chunk_rows, dim), blocks=(inner, dim), cparams=cparams)
    array = blosc2.open(path)
    return lambda idx: array[idx]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("flat")
    ap.add_argument("rows", type=int)
    ap.add_argument("dim", type=int)
    ap.add_argument("work")
    ap.add_argument("--reads", type=int, default=1 << 18)
    ap.add_argument("--batch", type=int, default=32768)
    ap.add_argument("--inner", type=int, default=16, help="rows per inner chunk (tensorstore) and per block (blosc2)")
    ap.add_argument("--outer", type=int, default=65536, help="rows per shard (tensorstore) and per chunk (blosc2)")
    args = ap.parse_args()
    values = np.fromfile(args.flat, dtype="<u2", count=args.rows * args.dim).reshape(args.rows, args.dim)
    raw_bytes = values.nbytes
    os.makedirs(args.work, exist_ok=True)
    out = {"rows": args.rows, "dim": args.dim, "dtype": "bf16", "inner_rows": args.inner, "outer_rows": args.outer,
           "batch": args.batch, "reads": args.reads, "peers": {}}

    def check(idx, got):
        if not np.array_equal(np.asarray(got), values[idx]):
            raise SystemExit("a peer read back different rows")

    for name, make, suffix in [("tensorstore", tensorstore_peer, "zarr"), ("blosc2", blosc2_peer, "b2nd")]:
        path = os.path.join(args.work, f"table.{suffix}")
        start = time.perf_counter()
        try:
            read = make(values, path, args.inner, args.outer)
        except ImportError as error:
            out["peers"][name] = {"skipped": str(error)}
            continue
        written = time.perf_counter() - start
        size = directory_bytes(path)
        timed_reads(read, args.rows, min(args.batch, args.reads), args.batch, 1, check)  # brings the file into the page cache
        warm = timed_reads(read, args.rows, args.reads, args.batch, 2, check)
        cold = None
        if drop_caches():
            cold = timed_reads(read, args.rows, min(args.reads, args.batch), args.batch, 3, check)
        out["peers"][name] = {"bytes": size, "ratio": size / raw_bytes, "write_seconds": written,
                              "warm_rows_per_second": warm, "cold_rows_per_second": cold}
        shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
