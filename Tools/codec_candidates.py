#!/usr/bin/env python3
"""Compressed sizes of row-granular codec candidates for the value table (issue 13's first step),
against today's zstd byte-plane shards and the order-0 entropy, on N(0, 0.02) tables and
on trained weights.

    codec_candidates.py [--rows 65536] [--trained FILE.safetensors] [--json OUT.json]

Rows are 64 elements in bf16, f16 and f32. Each row-granular candidate is sized with its own
per-row overhead: a 4-byte row checksum (the ratio with 8 bytes is one more column) and, for
the variable-length codes, a 4-byte offset per row so that row i is found without decoding the
rows before it. Candidates, for an element x as an unsigned integer rotated left by one bit
(the sign to bit 0, so that the top byte holds the exponent of bf16 and f32, and of f16 its 5
exponent bits and 3 mantissa bits):
- huffman-top: the top byte coded with one static Huffman table per store (built from the
  whole table's histogram), the other bytes stored as they are;
- huffman-exponent: the exponent field alone so coded (8 bits of bf16 and f32, where it is the
  top byte, 5 of f16), the other bits packed as they are;
- nibble-top: the 15 most frequent top bytes as 4-bit codes (code 15: the byte follows, raw,
  after the row's nibbles), the other bytes as they are: fixed positions, decodable with byte
  shuffles;
- zstd-K: K consecutive rows as one zstd frame (level 3) with a 16 KiB dictionary trained on
  the table's K-row groups, the rows split into byte planes first.
Sizes only: decode speeds need the native code (the issue's 2 GB/s per core target).
--trained takes any safetensors file of trained float weights (for example
silero_vad/data/silero_vad_16k.safetensors of the PyPI package silero-vad), read as rows of 64.
"""
import argparse
import heapq
import json
import math
import os
import sys

import numpy as np
import zstandard

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pkmtools.tensorio import f32_to_bf16, read_safetensors  # noqa: E402

DIM = 64


def bits_of(values, dtype):
    """The elements as unsigned integers of their type (uint16 for bf16 and f16, uint32 for f32)."""
    if dtype == "bf16":
        return f32_to_bf16(values.astype(np.float32)).view(np.uint16)
    if dtype == "f16":
        return values.astype(np.float16).view(np.uint16)
    return values.astype(np.float32).view(np.uint32)


def rotated(x):
    w = x.dtype.itemsize * 8
    return ((x << 1) | (x >> (w - 1))).astype(x.dtype)


def split(x):
    """(top byte, the other bytes as a [rows, k] uint8 array) of rotated elements [rows, DIM]."""
    r = rotated(x)
    size = r.dtype.itemsize
    b = r.view(np.uint8).reshape(r.shape[0], DIM, size)  # little-endian: byte size-1 is the top
    return b[:, :, size - 1], b[:, :, :size - 1].reshape(r.shape[0], -1)


def huffman_lengths(counts):
    """Code length per symbol of a Huffman code for `counts` (zero counts get no code)."""
    heap = [(c, i, [s]) for i, (s, c) in enumerate(counts.items()) if c > 0]
    lengths = {s: 0 for s, _ in counts.items()}
    if len(heap) == 1:
        return {heap[0][2][0]: 1}
    heapq.heapify(heap)
    uid = len(heap)
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        heapq.heappush(heap, (c1 + c2, uid, s1 + s2))
        uid += 1
    return lengths


def entropy_bits(symbols):
    _, counts = np.unique(symbols, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum()) * symbols.size


def candidates(x, dtype):
    rows, size = x.shape[0], x.dtype.itemsize
    raw = rows * DIM * size
    top, rest = split(x)
    out = {}
    # Order-0 entropy of whole elements (bf16, f16), or of the top byte with the rest raw (f32).
    out["order-0 entropy"] = (entropy_bits(x) if size == 2 else entropy_bits(top) + rest.size * 8) / 8 / raw
    values, counts = np.unique(top, return_counts=True)
    lengths = huffman_lengths(dict(zip(values.tolist(), counts.tolist())))
    code = np.zeros(256, np.int64)
    for s, n in lengths.items():
        code[s] = n
    per_row_bits = code[top].sum(axis=1)
    body = (np.ceil(per_row_bits / 8) + rest.shape[1]).sum()
    out["huffman-top"] = (body + rows * (4 + 4)) / raw
    # The exponent field alone: the top 5 bits of a rotated f16, the top byte otherwise.
    width, exponent_bits = size * 8, 5 if dtype == "f16" else 8
    exponents = (rotated(x).astype(np.uint64) >> np.uint64(width - exponent_bits)).astype(np.int64)
    e_values, e_counts = np.unique(exponents, return_counts=True)
    e_code = np.zeros(1 << exponent_bits, np.int64)
    for e, n in huffman_lengths(dict(zip(e_values.tolist(), e_counts.tolist()))).items():
        e_code[e] = n
    row_bits = e_code[exponents].sum(axis=1) + DIM * (width - exponent_bits)
    out["huffman-exponent"] = (np.ceil(row_bits / 8).sum() + rows * (4 + 4)) / raw
    frequent = values[np.argsort(-counts)][:15]
    escapes = (~np.isin(top, frequent)).sum(axis=1)
    out["nibble-top"] = ((DIM // 2 + escapes + rest.shape[1]).sum() + rows * (4 + 4)) / raw
    out["nibble-top: share escaped"] = float((~np.isin(top, frequent)).mean())
    planes = np.concatenate([top[:, :, None], rest.reshape(rows, DIM, size - 1)[:, :, ::-1]], axis=2)  # top byte first
    for k in (1, 2, 4, 8):
        groups = [planes[i:i + k].transpose(2, 0, 1).tobytes() for i in range(0, rows, k)]
        sample = groups[:: max(1, len(groups) // 4000)]
        dictionary = zstandard.train_dictionary(16 << 10, sample)
        compressor = zstandard.ZstdCompressor(level=3, dict_data=dictionary, write_content_size=False, write_checksum=False,
                                              write_dict_id=False)
        total = sum(len(compressor.compress(g)) for g in groups)
        out[f"zstd-{k}"] = (total + len(groups) * 4 + rows * 4 + len(dictionary.as_bytes())) / raw
    # Today's codec: byte planes of 64 KiB shards, each one zstd frame per plane (level 3, no dictionary).
    shard_rows = (64 << 10) // (DIM * size)
    total = 0
    for i in range(0, rows, shard_rows):
        block = planes[i:i + shard_rows]
        for p in range(size):
            total += len(zstandard.ZstdCompressor(level=3).compress(np.ascontiguousarray(block[:, :, p]).tobytes()))
    out["zstd byte-plane shards (today)"] = (total + (rows + shard_rows - 1) // shard_rows * (32 + 8 * size)) / raw
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=65536)
    ap.add_argument("--trained")
    ap.add_argument("--json")
    a = ap.parse_args()
    rng = np.random.default_rng(1)
    tables = {"N(0, 0.02)": (rng.standard_normal((a.rows, DIM)) * 0.02)}
    if a.trained:
        weights = [t.astype(np.float64).reshape(-1) for t in read_safetensors(a.trained).values() if t.dtype.kind == "f"]
        flat = np.concatenate(weights)
        tables[f"trained ({os.path.basename(a.trained)}, {flat.size} weights)"] = flat[: flat.size // DIM * DIM].reshape(-1, DIM)
    results = {}
    for name, values in tables.items():
        for dtype in ("bf16", "f16", "f32"):
            results[f"{name} {dtype}"] = candidates(bits_of(values, dtype), dtype)
    columns = list(next(iter(results.values())).keys())
    print("| table | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(f"{r[c]:.3f}" for c in columns) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
