#!/usr/bin/env python3
"""A nibble store's reduce against the raw store of the same rows, taking turns in one process.

    codecs_interleaved.py RAW NIBBLE [--cache-bytes N] [--rounds 15] [--batches 16] [--threads 1]

RAW and NIBBLE hold the same table (Tools/bench_codecs.sh makes both). Both are opened through
pkmstore (the C API), RAW with no cache and NIBBLE with `--cache-bytes` (the budget that decides
whether its slots are copied into memory, Store.open's cacheBytes; 0 reads them in place). The
same batches of 256 uniform queries x 128 rows go through one store and then the other, which
goes first alternating, after passes that wait for both background checks (pkmtools/turns.py);
each round takes the ratio of the two passes. Prints one line.
"""
import argparse

import pkmstore
from pkmtools.turns import Passes

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
passes = Passes(rows, dim, a.batches, a.threads)
checked = passes.warm(raw, nibble)
ratio, r, n, (low, high) = passes.take_turns(raw, nibble, a.rounds)
print(f"{rows} rows, {a.threads} thread(s), nibble cache {a.cache_bytes} bytes: nibble/raw {ratio:.2f} "
      f"({low:.2f}-{high:.2f}) of {a.rounds} rounds; raw {r / 1e6:.1f}, nibble {n / 1e6:.1f} M rows/s; every row checked: {checked}")
