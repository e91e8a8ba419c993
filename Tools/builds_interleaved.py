#!/usr/bin/env python3
"""Two builds of libpkmstore over the same store, taking turns in one process: what a change to
the read path or the kernel is worth, free of this VM's swings between runs (BENCHMARKS.md).

    builds_interleaved.py OLD_LIBRARY NEW_LIBRARY STORE [--cache-bytes N] [--rounds 15] [--batches 16] [--threads 1]

OLD_LIBRARY is libpkmstore.so of an earlier commit (git worktree add /tmp/old COMMIT, then
swift build -c release --product pkmstore there), NEW_LIBRARY this checkout's. pkmstore is
imported once with each (ctypes loads each library on its own), and each opens STORE with
`--cache-bytes` (0 reads a nibble table's slots in place). The same batches of 256 uniform
queries x 128 rows go through one build and then the other, which goes first alternating, after
passes that wait for both background checks (pkmtools/turns.py). Prints one line.
"""
import argparse
import importlib
import os
import sys

from pkmtools.turns import Passes

ap = argparse.ArgumentParser()
ap.add_argument("old"); ap.add_argument("new"); ap.add_argument("store")
ap.add_argument("--cache-bytes", type=int, default=1 << 30)
ap.add_argument("--rounds", type=int, default=15); ap.add_argument("--batches", type=int, default=16)
ap.add_argument("--threads", type=int, default=1)
a = ap.parse_args()


def open_with(library):
    """STORE opened through a fresh import of pkmstore bound to `library`."""
    for name in [m for m in sys.modules if m == "pkmstore" or m.startswith("pkmstore.")]:
        del sys.modules[name]
    os.environ["PKMSTORE_LIBRARY"] = os.path.abspath(library)
    return importlib.import_module("pkmstore").open(a.store, cache_bytes=a.cache_bytes)


old, new = open_with(a.old), open_with(a.new)
rows, dim = old.layout.rows, old.layout.dim
passes = Passes(rows, dim, a.batches, a.threads)
checked = passes.warm(old, new)
ratio, o, n, (low, high) = passes.take_turns(old, new, a.rounds)
print(f"{rows} rows, codec {old.layout.codec}, {a.threads} thread(s), cache {a.cache_bytes} bytes: new/old {ratio:.2f} "
      f"({low:.2f}-{high:.2f}) of {a.rounds} rounds; old {o / 1e6:.1f}, new {n / 1e6:.1f} M rows/s; every row checked: {checked}")
