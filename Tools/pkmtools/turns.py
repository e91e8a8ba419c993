"""Two stores' reduces taking turns in one process (Tools/codecs_interleaved.py,
Tools/builds_interleaved.py): on a VM whose speed moves by 2x between runs a minute apart
(BENCHMARKS.md), the ratio of two passes a few milliseconds apart is steadier than that of two
processes."""
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

BATCH, BAG = 256, 128


class Passes:
    """`count` batches of BATCH uniform queries x BAG rows of a table of `rows` rows (random
    weights, each query its output row), reduced through pkmstore; with `threads` > 1 each batch's
    queries are split into that many parts reduced at once, one call a part on threads of this
    process (the C API runs without Python's lock), as a server's workers would."""

    def __init__(self, rows, dim, count=16, threads=1, seed=1):
        rng = np.random.default_rng(seed)
        self.batches = [(rng.integers(0, rows, BATCH * BAG, dtype=np.int64),
                         rng.standard_normal(BATCH * BAG).astype(np.float32)) for _ in range(count)]
        self.targets = np.repeat(np.arange(BATCH, dtype=np.int64), BAG)
        self.out = np.zeros((BATCH, dim), np.float32)
        self.threads = threads
        # Each part: whole queries, so that parts add into different rows of `out`.
        self.parts = [slice(p * BATCH // threads * BAG, (p + 1) * BATCH // threads * BAG) for p in range(threads)]
        self.pool = ThreadPoolExecutor(threads)
        self.rows_per_pass = count * BATCH * BAG

    def run(self, store):
        """One pass of every batch through `store`; returns its rows/s."""
        start = time.perf_counter()
        for idx, w in self.batches:
            self.out.fill(0)
            if self.threads == 1:
                store.gather_reduce(idx, w, targets=self.targets, outputs=BATCH, out=self.out)
            else:
                list(self.pool.map(lambda p: store.gather_reduce(idx[p], w[p], targets=self.targets[p], outputs=BATCH,
                                                                  out=self.out), self.parts))
        return self.rows_per_pass / (time.perf_counter() - start)

    def warm(self, first, second):
        """A pass of each, then both stores' background checks awaited and a pass of each again,
        so that the rounds read checked rows; checks that both give the same sums (to float
        summation order). Returns whether every row of both was checked."""
        for store in (first, second):
            self.run(store)
        checked = first.wait_checked(600) and second.wait_checked(600)
        for store in (first, second):
            self.run(store)
        idx, w = self.batches[0]
        a, b = (s.gather_reduce(idx, w, targets=self.targets, outputs=BATCH) for s in (first, second))
        assert np.allclose(a, b, rtol=1e-5, atol=1e-6), "the two stores give different sums"
        return checked

    def take_turns(self, first, second, rounds):
        """`rounds` rounds of a pass of each, which goes first alternating. Returns the medians
        (second/first, first's rows/s, second's rows/s) and the ratios' range."""
        ratios, a, b = [], [], []
        for r in range(rounds):
            if r % 2 == 0:
                x = self.run(first); y = self.run(second)
            else:
                y = self.run(second); x = self.run(first)
            ratios.append(y / x); a.append(x); b.append(y)
        return statistics.median(ratios), statistics.median(a), statistics.median(b), (min(ratios), max(ratios))
