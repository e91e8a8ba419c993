#!/usr/bin/env python3
"""Flips bits anywhere in a store file, and truncates it, then checks what memtool makes of it.

    corrupt_harness.py --memtool PATH [--flips 1000] [--structural 1000] [--truncations 50] [--seed 1]
                       [--codec zstd|raw|nibble] [--json OUT]

`--flips` flips one random bit anywhere in the file; `--structural` flips one in LMDB's own
pages (meta, branch and leaf pages, found by walking the page headers), where LMDB has no
checksum of its own. Each damaged copy is checked in child processes: `memtool query` (which
reads rows in place) must give exactly the undamaged store's outputs or fail with a message;
`memtool verify` must either pass, and then `memtool export` must give exactly the undamaged
store's export, or exit 1 with a message naming what is damaged. A signal (a crash) or a
silent difference fails the trial. Exit status 0 when every trial passed.
"""
import argparse
import collections
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile

PAGE = 4096


def structural_pages(data):
    pages, p = [], 0
    while p * PAGE < len(data):
        flags = struct.unpack_from("<H", data, p * PAGE + 10)[0]
        if p > 1 and flags & 0x04:  # an overflow run (a shard or tensor): skip its pages
            p += max(struct.unpack_from("<I", data, p * PAGE + 12)[0], 1)
            continue
        pages.append(p)
        p += 1
    return pages


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--memtool", required=True)
    ap.add_argument("--flips", type=int, default=1000)
    ap.add_argument("--structural", type=int, default=1000)
    ap.add_argument("--truncations", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--codec", default="zstd", choices=["zstd", "raw", "nibble"],
                    help="shard codec of the store to damage (nibble: bf16 values)")
    ap.add_argument("--layers", type=int, default=1, help="memory layers of the store (the last one is queried and exported)")
    ap.add_argument("--json")
    args = ap.parse_args()
    memtool = os.path.abspath(args.memtool)
    work = tempfile.mkdtemp(prefix="pkm-corrupt-")
    rng = random.Random(args.seed)
    outcomes, failures = collections.Counter(), []
    try:
        original = os.path.join(work, "m.pkm")
        made = subprocess.run([memtool, "create", original, "--synthetic", "--rows", "20000", "--dim", "64",
                               "--heads", "1", "--key-dim", "16", "--codec", args.codec, "--layers", str(args.layers),
                               *(["--dtype", "bf16"] if args.codec == "nibble" else [])],
                              capture_output=True, text=True)
        layer = [] if args.layers == 1 else ["--layer", f"layer{args.layers - 1}"]
        if made.returncode != 0:
            sys.exit(f"cannot create the store: {made.stderr}")
        reference = os.path.join(work, "reference.safetensors")
        subprocess.run([memtool, "export", original, "--to", reference, *layer], check=True, capture_output=True)
        expected = open(reference, "rb").read()
        queries, queried = os.path.join(work, "q.npy"), os.path.join(work, "out.npy")
        subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers", "make_queries.py"),
                        queries, "64", "1", "16"], check=True, capture_output=True)
        answers = []
        for _ in range(2):
            subprocess.run([memtool, "query", original, "--queries", queries, "--output", queried, *layer], check=True, capture_output=True)
            answers.append(open(queried, "rb").read())
        if answers[0] != answers[1]:
            sys.exit("memtool query gives different outputs for the same store and queries; nothing to compare against")
        expected_answer = answers[0]
        data = open(original, "rb").read()
        lmdb_pages = structural_pages(data)
        damaged, exported = os.path.join(work, "d.pkm"), os.path.join(work, "d.safetensors")

        def trial(kind, damage):
            b = damage(bytearray(data))
            for f in [damaged, damaged + "-lock", exported, queried]:
                if os.path.exists(f):
                    os.remove(f)
            open(damaged, "wb").write(b)
            query = subprocess.run([memtool, "query", damaged, "--queries", queries, "--output", queried, *layer],
                                   capture_output=True, text=True, timeout=120)
            if query.returncode < 0:
                return "crash", f"query died with signal {-query.returncode}"
            if query.returncode == 0 and open(queried, "rb").read() != expected_answer:
                return "silently different", "query gave other outputs than the undamaged store's, without an error"
            if query.returncode != 0 and not query.stderr.strip():
                return "error", "query failed without a message"
            verify = subprocess.run([memtool, "verify", damaged], capture_output=True, text=True, timeout=120)
            if verify.returncode < 0:
                return "crash", f"verify died with signal {-verify.returncode}"
            if verify.returncode != 0:
                message = (verify.stderr or verify.stdout).strip()
                return ("error named", None) if message else ("error", "verify failed without a message")
            export = subprocess.run([memtool, "export", damaged, "--to", exported, *layer], capture_output=True, text=True, timeout=120)
            if export.returncode < 0:
                return "crash", f"export died with signal {-export.returncode}"
            if export.returncode != 0:
                return ("error named", None) if export.stderr.strip() else ("error", "export failed without a message")
            if open(exported, "rb").read() != expected:
                return "silently different", "verify passed but the export differs from the undamaged store's"
            return "read correctly", None

        def flip(offset_of):
            def damage(b):
                at = offset_of(b)
                b[at] ^= 1 << rng.randrange(8)
                return b
            return damage

        plan = ([("flip anywhere", flip(lambda b: rng.randrange(len(b))))] * args.flips
                + [("flip in LMDB pages", flip(lambda b: rng.choice(lmdb_pages) * PAGE + rng.randrange(PAGE)))] * args.structural
                + [("truncation", lambda b: b[:rng.randrange(len(b))])] * args.truncations)
        for n, (kind, damage) in enumerate(plan):
            outcome, problem = trial(kind, damage)
            outcomes[f"{kind}: {outcome}"] += 1
            if problem:
                failures.append({"trial": n, "kind": kind, "problem": problem})
                print(f"trial {n} ({kind}): {problem}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for k, v in sorted(outcomes.items()):
        print(f"{v:6d}  {k}")
    print(f"{sum(outcomes.values())} damaged copies, {len(failures)} failed")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seed": args.seed, "codec": args.codec, "layers": args.layers, "outcomes": outcomes, "failures": failures}, f, indent=2)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
