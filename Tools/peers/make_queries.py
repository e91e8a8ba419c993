#!/usr/bin/env python3
"""Writes benchmark queries float32 [N, H, 2, d] to a .npy, for memtool bench --distribution replay:FILE and the peers.

    make_queries.py OUT.npy N H d [--clustered]

Uniform: N(0, 1). Clustered: 256 N(0, 1) centres plus N(0, 0.25^2) noise (the skewed access of trained memories).
"""
import argparse

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("out"); ap.add_argument("n", type=int); ap.add_argument("heads", type=int); ap.add_argument("d", type=int)
ap.add_argument("--clustered", action="store_true"); ap.add_argument("--seed", type=int, default=1)
a = ap.parse_args()
rng = np.random.default_rng(a.seed)
if a.clustered:
    centres = rng.standard_normal((256, a.heads, 2, a.d))
    q = centres[rng.integers(0, 256, a.n)] + 0.25 * rng.standard_normal((a.n, a.heads, 2, a.d))
else:
    q = rng.standard_normal((a.n, a.heads, 2, a.d))
np.save(a.out, q.astype(np.float32))
