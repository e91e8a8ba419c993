#!/usr/bin/env python3
"""The cost of the Python road: pkmstore's MemoryLayer.lookup against the same C API call made
from C (Tools/capi_timer.c), same store, same queries, same process count, in one run.

    bench_python.py WORKDIR [--rounds R]

Builds (once) a 2^20-slot PKM memory (grid 1024x1024, H=4, d=128, k=32, 2^20 x 64 bf16 values,
raw codec) in WORKDIR, then for batch 256 and batch 1 alternates C and Python measurements
(each the median over every call of R rounds) and prints one JSON document: the Python-side
overhead per call, as a fraction at batch 256 and in microseconds at batch 1, and the data
pointers that show queries and outputs are not copied.
"""
import argparse
import json
import os
import subprocess
import time

import numpy as np

import pkmstore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# swift and clang from the toolchain, as Tools/prelude.sh puts them on PATH for the shell scripts.
os.environ["PATH"] = "/opt/swift/usr/bin" + os.pathsep + os.environ.get("PATH", "")


def median_call_seconds(layer, q, batch, rounds):
    out = np.empty((batch, layer.output_dim), np.float32)
    idx = np.empty((batch, layer.heads, layer.top_k), np.int64)
    w = np.empty((batch, layer.heads, layer.top_k, layer.cores), np.float32)
    times = []
    for _ in range(rounds):
        for b in range(q.shape[0] // batch):
            chunk = q[b * batch:(b + 1) * batch]
            start = time.perf_counter()
            layer.lookup(chunk, out=out, indices=idx, weights=w)
            times.append(time.perf_counter() - start)
    fresh = []
    for b in range(q.shape[0] // batch):
        chunk = q[b * batch:(b + 1) * batch]
        start = time.perf_counter()
        layer.lookup(chunk)
        fresh.append(time.perf_counter() - start)
    return float(np.median(times)), float(np.median(fresh))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--alternations", type=int, default=5)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    memtool = os.path.join(ROOT, ".build", "release", "memtool")
    subprocess.check_call(["swift", "build", "-c", "release", "--product", "memtool"], cwd=ROOT, stdout=subprocess.DEVNULL)
    store = os.path.join(a.work, "p20.pkm")
    if not os.path.exists(store):
        subprocess.check_call([memtool, "create", store, "--synthetic", "--grid", "1024x1024", "--rows", "1048576", "--dim", "64",
                               "--scoring", "pkm", "--heads", "4", "--key-dim", "128", "--topk", "32", "--codec", "raw"],
                              stdout=subprocess.DEVNULL)
    timer = os.path.join(a.work, "capi_timer")
    lib = os.path.dirname(pkmstore._native.lib._name)
    subprocess.check_call(["clang", "-O2", "-std=c11", "-I", os.path.join(ROOT, "Sources", "CPKMStore", "include"),
                           os.path.join(ROOT, "Tools", "capi_timer.c"), "-L", lib, "-lpkmstore", "-Wl,-rpath," + lib, "-o", timer])
    rng = np.random.default_rng(1)
    layer = pkmstore.MemoryLayer(store)
    report = {"store": store, "library": pkmstore._native.lib._name, "version": pkmstore.version(), "results": []}
    for batch, count in [(256, 4096), (1, 2048)]:
        q = rng.standard_normal((count, 4, 2, 128)).astype(np.float32)
        raw = os.path.join(a.work, f"q{batch}.f32")
        q.tofile(raw)
        layer.lookup(q[:batch])  # warm the pages and the worker threads
        c_runs, py_runs, fresh_runs = [], [], []
        for _ in range(a.alternations):  # alternate, so drifts of this VM hit both
            c = json.loads(subprocess.check_output([timer, store, raw, str(batch), str(a.rounds)]))
            c_runs.append(c["median_seconds"])
            p, f = median_call_seconds(layer, q, batch, a.rounds)
            py_runs.append(p)
            fresh_runs.append(f)
        c_s, py_s, fresh_s = min(c_runs), min(py_runs), min(fresh_runs)
        report["results"].append({"batch": batch, "c_seconds_per_call": c_s, "python_seconds_per_call": py_s,
                                  "python_new_arrays_seconds_per_call": fresh_s,
                                  "overhead_fraction": py_s / c_s - 1, "overhead_microseconds": (py_s - c_s) * 1e6,
                                  "c_runs": c_runs, "python_runs": py_runs})
    q = rng.standard_normal((8, 4, 2, 128)).astype(np.float32)
    out = np.empty((8, layer.output_dim), np.float32)
    result, _, _ = layer.lookup(q, out=out)
    from pkmstore.arrays import as_array
    report["zero_copy"] = {"queries_pointer_passed": as_array(q, np.float32, "q").ctypes.data == q.ctypes.data,
                           "output_is_callers_array": result is out}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
