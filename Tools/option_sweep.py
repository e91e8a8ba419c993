#!/usr/bin/env python3
"""Boundary values for every numeric option of every memtool command: no input may end in a signal.

Each run starts from a small valid invocation and sets one option to one boundary value
(0, -1, 1, 3, 2^31, 2^32, 2^62, 2^63-1, nan, 1e308, a hex literal, empty). A run passes when
memtool exits by itself (0, or non-zero with a message on stderr) within the time limit, or is
still reporting progress then (a valid request that takes long); it fails when it ends with a
signal, falls silent past the limit, or exits non-zero without saying why.

    python3 Tools/option_sweep.py --memtool .build/release/memtool [--json report.json]
"""
import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

VALUES = ["0", "-1", "1", "3", str(2**31), str(2**32), str(2**62), str(2**63 - 1), "nan", "1e308", "0x10", ""]


def runs(work, store, checkpoint, queries, bad_queries):
    """(label, argv builder) for every option under test; the builder takes the value and a fresh path."""
    create = ["create", "--synthetic", "--rows", "256", "--dim", "8", "--heads", "1", "--key-dim", "8", "--topk", "4"]
    bench = ["bench", store, "--queries", "16", "--batch", "8", "--threads", "1", "--warmup", "0", "--no-brute-force"]
    storage = ["storage-bench", "--rows", "512", "--dim", "8", "--reads", "512", "--dtypes", "bf16"]
    table = {
        "create": (lambda out: create[:1] + [out] + create[1:],
                   ["seed", "rows", "dim", "heads", "key-dim", "rank", "cores", "expansion", "topk", "top-m", "out-dim",
                    "rows-per-shard", "level", "commit-bytes", "layers", "gate-dim"]),
        "create (tucker)": (lambda out: create[:1] + [out] + create[1:] + ["--scoring", "tucker", "--top-m", "8"],
                            ["core-decay", "rank", "cores"]),
        "import": (lambda out: ["import", out, "--from", checkpoint],
                   ["topk", "top-m", "address-key", "rows-per-shard", "level", "commit-bytes", "window", "pool-offset"]),
        # Adding a layer to a copy of the base store, reading its rows.
        "import --layer": (lambda out: (shutil.copyfile(store, out), ["import", out, "--from", checkpoint, "--layer", "extra",
                                                                      "--values-from-store"])[1],
                           ["window", "pool-offset", "topk", "gate-dim"]),
        "compact": (lambda out: ["compact", store, "--output", out], ["level", "rows-per-shard"]),
        "split": (lambda out: ["split", store, "--out", out], ["parts"]),
        "split --by dims": (lambda out: ["split", store, "--out", out, "--by", "dims"], ["parts"]),
        "query": (lambda out: ["query", store, "--queries", queries, "--output", out], ["batch"]),
        "bench": (lambda out: bench + ["--flat-path", out], ["queries", "batch", "threads", "warmup", "cache-bytes", "seed"]),
        "storage-bench": (lambda out: storage + ["--directory", os.path.dirname(out)],
                          ["rows", "dim", "rows-per-shard", "level", "reads"]),
    }
    # A checkpoint read as a layer it is not.
    for layout in ["pkm-pytorch", "meta-memory", "nonsense", ""]:
        yield f"import --layout {layout!r}", (lambda out, l=layout: ["import", out, "--from", checkpoint, "--layout", l])
    for command, (base, options) in table.items():
        for option in options:
            for value in VALUES:
                yield f"{command} --{option} {value!r}", (lambda out, b=base, o=option, v=value: b(out) + [f"--{o}", v])
    # Layer names, good and hostile, wherever a command takes one.
    for name in ["default", "", "/", "..", "../../etc", "a/b", "-x", "x" * 129, "\u00e9", "nope"]:
        yield f"query --layer {name!r}", (lambda out, n=name: ["query", store, "--queries", queries, "--output", out, "--layer", n])
        yield f"export --layer {name!r}", (lambda out, n=name: ["export", store, "--to", out, "--layer", n])
        yield f"bench --layer {name!r}", (lambda out, n=name: bench + ["--flat-path", out, "--layer", n])
        yield f"import --layer {name!r}", (lambda out, n=name: (shutil.copyfile(store, out), ["import", out, "--from", checkpoint, "--layer", n])[1])
        yield f"remove-layer {name!r}", (lambda out, n=name: (shutil.copyfile(store, out), ["remove-layer", out, n])[1])
    for layers in ["all", "", "some", "0"]:
        yield f"bench --layers {layers!r}", (lambda out, l=layers: bench + ["--flat-path", out, "--layers", l])
    yield "bench --resident", (lambda out: bench + ["--flat-path", out, "--resident"])
    for act in ["gelu", "none", "relu", ""]:
        yield f"create --gate-activation {act!r}", (lambda out, a=act: create[:1] + [out] + create[1:] + ["--gate-dim", "2", "--gate-activation", a])
    for q in bad_queries + [queries]:
        yield f"query --gate-inputs {os.path.basename(q)}", (lambda out, q=q: ["query", store, "--queries", queries, "--output", out,
                                                                                "--gate-inputs", q])
    for axis in ["rows", "dims", "columns", ""]:
        yield f"split --by {axis!r}", (lambda out, a=axis: ["split", store, "--out", out, "--parts", "2", "--by", a])
    # Grids and replayed queries of the wrong shape.
    for grid in ["0x0", "4294967296x4294967296", "65536x65536", "-1x4", "1x", "x", ""]:
        yield f"create --grid {grid!r}", (lambda out, g=grid: create[:1] + [out, "--synthetic", "--grid", g, "--dim", "8", "--heads", "1", "--key-dim", "8"])
    for q in bad_queries:
        yield f"bench --distribution replay:{os.path.basename(q)}", (lambda out, q=q: bench + ["--flat-path", out, "--distribution", f"replay:{q}"])
        yield f"query --queries {os.path.basename(q)}", (lambda out, q=q: ["query", store, "--queries", q, "--output", out])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memtool", required=True)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--json")
    args = ap.parse_args()
    memtool = os.path.abspath(args.memtool)
    with tempfile.TemporaryDirectory() as work:
        store = os.path.join(work, "base.pkm")
        checkpoint = os.path.join(work, "base.safetensors")
        subprocess.run([memtool, "create", store, "--synthetic", "--rows", "256", "--dim", "8", "--heads", "1",
                        "--key-dim", "8", "--topk", "4"], check=True, capture_output=True)
        subprocess.run([memtool, "export", store, "--to", checkpoint], check=True, capture_output=True)
        queries = os.path.join(work, "q.npy")
        np.save(queries, np.random.default_rng(0).standard_normal((4, 1, 2, 8)).astype(np.float32))
        bad = []
        for name, array in [("wrong-shape.npy", np.zeros((3, 5), np.float32)), ("empty.npy", np.zeros((0, 1, 2, 8), np.float32)),
                            ("float64.npy", np.zeros((4, 1, 2, 8))), ("nan.npy", np.full((4, 1, 2, 8), np.nan, np.float32))]:
            bad.append(os.path.join(work, name))
            np.save(bad[-1], array)

        cases = list(runs(work, store, checkpoint, queries, bad))

        def one(i_case):
            i, (label, build) = i_case
            out_dir = os.path.join(work, f"run{i}")
            os.mkdir(out_dir)
            argv = [memtool] + build(os.path.join(out_dir, "out"))
            try:
                p = subprocess.run(argv, capture_output=True, timeout=args.timeout, text=True, errors="replace")
            except subprocess.TimeoutExpired as e:
                # A valid request that takes long says so on stderr (progress lines); a silent one hangs.
                said = (e.stderr or b"").decode(errors="replace")
                return label, "working" if "ETA" in said else "timeout", said[-200:]
            if p.returncode < 0:
                return label, f"signal {-p.returncode}", p.stderr[-300:]
            if p.returncode != 0 and not p.stderr.strip():
                return label, f"exit {p.returncode} without a message", ""
            subprocess.run(["rm", "-rf", out_dir])
            return label, "ok" if p.returncode == 0 else f"refused ({p.returncode})", p.stderr.strip().splitlines()[-1:] and p.stderr.strip().splitlines()[-1]

        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(one, enumerate(cases)))
    failures = [r for r in results if not (r[1] in ("ok", "working") or r[1].startswith("refused"))]
    for label, outcome, detail in failures:
        print(f"FAIL {label}: {outcome} {detail}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"run": l, "outcome": o, "stderr": d} for l, o, d in results], f, indent=1)
    print(f"{len(results) - len(failures)} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
