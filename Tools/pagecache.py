#!/usr/bin/env python3
"""Puts files into the same page-cache state before a benchmark compares readers of them.

    pagecache.py FILE...

How a file's pages came into the page cache decides the page size a map of it gets: pages in
2 MiB folios are mapped with 2 MiB entries (by any map, ours with MADV_RANDOM included), pages
written in small pieces (LMDB's) or faulted in one at a time (a map with MADV_RANDOM) or read
at the start of a readahead ramp stay 4 KiB. A random-row reader of a 4 KiB-mapped table runs
up to 2x slower in cache (Tools/kernel_paths.sh), so a store and a peer's flat copy are compared
with both in 2 MiB folios. For each file: write back its dirty pages, drop its pages from the
cache (POSIX_FADV_DONTNEED: pages another process maps stay), fault it back in through a map
advised MADV_HUGEPAGE (which reads in 2 MiB folios where the filesystem has large folios), and
report on stderr how much of it a fresh map covers with 2 MiB entries (FilePmdMapped).

    pagecache.py --report FILE...

Changes nothing: for each file, how much of it is in the page cache (`mincore`) and how much of
that a fresh map covers with 2 MiB entries (only pages in memory are touched).
"""
import contextlib
import ctypes
import mmap
import os
import sys

import numpy as np

MADV_HUGEPAGE = 14
libc = ctypes.CDLL(None, use_errno=True)
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def pmd_mapped_bytes():
    with open(f"/proc/{os.getpid()}/smaps_rollup") as f:
        for line in f:
            if line.startswith("FilePmdMapped:"):
                return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def mapped_pages(path, before_map=None):
    """The file's bytes as a numpy view of a fresh map (None for an empty file); `before_map(fd)`
    runs first."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            yield None
            return
        if before_map:
            before_map(fd)
        # Left for the collector to unmap: closing it while the caller's view lives would fail.
        yield np.frombuffer(mmap.mmap(fd, size, prot=mmap.PROT_READ), dtype=np.uint8)
    finally:
        os.close(fd)


def touched_in_2mib_pages(pages, offsets):
    """Reads a byte at each of `offsets`; returns the bytes this map gained in 2 MiB entries."""
    before = pmd_mapped_bytes()
    int(pages[offsets].sum(dtype=np.uint64))
    return pmd_mapped_bytes() - before


def drop(fd):
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def reread(path):
    with mapped_pages(path, before_map=drop) as pages:
        if pages is None:
            return
        if libc.madvise(pages.ctypes.data, pages.size, MADV_HUGEPAGE) != 0:
            print(f"pagecache: {path}: MADV_HUGEPAGE: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        mapped = touched_in_2mib_pages(pages, slice(None, None, 4096))  # a byte of every page
        print(f"pagecache: {path}: {pages.size >> 20} MiB read, {mapped >> 20} MiB of it mapped in 2 MiB pages", file=sys.stderr)


def report(path):
    with mapped_pages(path) as pages:
        if pages is None:
            return
        resident = np.zeros((pages.size + 4095) // 4096, dtype=np.uint8)
        libc.mincore(ctypes.c_void_p(pages.ctypes.data), ctypes.c_size_t(pages.size), resident.ctypes.data_as(ctypes.c_void_p))
        cached = np.flatnonzero(resident & 1)
        mapped = touched_in_2mib_pages(pages, cached * 4096)  # a byte of every page in memory
        print(f"pagecache: {path}: {pages.size >> 20} MiB, {len(cached) * 4096 >> 20} MiB in memory, "
              f"{mapped >> 20} MiB mapped in 2 MiB pages")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1:] == ["--report"]:
        sys.exit(__doc__)
    for path in sys.argv[2:] if sys.argv[1] == "--report" else sys.argv[1:]:
        (report if sys.argv[1] == "--report" else reread)(path)
