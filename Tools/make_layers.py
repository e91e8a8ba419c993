#!/usr/bin/env python3
"""Writes the checkpoints of several memory layers that share one value pool, as a model with
memory layers in several blocks would bring them, with queries and the results of
Spec/RETRIEVAL.md for each layer computed by Tools/reference_retrieval.py (pool windows
included).

    make_layers.py OUT_DIR [--layers N] [--rows N_POOL]

OUT_DIR receives pool.safetensors (the values alone, f32 [N_POOL, 16]) and, for each layer
l < N, layerL.safetensors and layerL.json ({"name", "window", "offset", "values"}: how
memtool import adds it), queriesL.npy, and expected_outputL.npy / expected_indicesL.npy /
expected_weightsL.npy. Layer 0 reads the whole pool and carries the pool's values (byte-equal
to the store's); the others carry no values and read windows of the pool (the last one wrapping
past its end), with their own keys, scoring and addressing.
"""
import argparse
import json
import os

import numpy as np

from pkmtools.tensorio import write_safetensors
from reference_retrieval import quantized, retrieve


def layer_config(l, n_pool):
    """Layer l's parameters: PKM and Tucker alternate; windows of the pool from the second on."""
    H, d, v = 2, 8, 16
    if l == 0:
        window, offset = n_pool, 0
    else:
        window, offset = n_pool // 2, (l * n_pool // 3) % n_pool  # the last wraps when offset > n_pool / 2
    E = 1 if l % 2 == 0 else 4
    slots = window * E
    nr = 16
    while slots % nr:
        nr //= 2
    nc = slots // nr
    tucker = l % 2 == 1
    cfg = {"scoring": "tucker" if tucker else "pkm", "heads": H, "keyDim": d, "gridRows": nr, "gridCols": nc,
           "rank": 2 if tucker else 1, "cores": 2 if tucker else 1, "expansion": E, "physicalRows": window,
           "valueDim": v, "outputDim": 6 if E > 1 else v, "topK": 5, "topM": 8 if tucker else 0,
           "activation": "softmax", "addressing": "keyed" if E > 1 else "identity",
           "addressKey": 4242 + l if E > 1 else 0, "poolRows": n_pool, "poolOffset": offset}
    return cfg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--rows", type=int, default=4096)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(2026)
    n_pool, v = args.rows, 16
    values = quantized(rng, (n_pool, v)) / 64.0
    write_safetensors(os.path.join(args.out, "pool.safetensors"), {"values": ("F32", values.astype(np.float32))}, {})
    for l in range(args.layers):
        cfg = layer_config(l, n_pool)
        H, d, r, c, E = cfg["heads"], cfg["keyDim"], cfg["rank"], cfg["cores"], cfg["expansion"]
        t = {"row_keys": quantized(rng, (H, r, cfg["gridRows"], d)) / 64.0,
             "col_keys": quantized(rng, (H, r, cfg["gridCols"], d)) / 64.0, "values": values}
        if cfg["scoring"] == "tucker":
            t["cores"] = quantized(rng, (H, c, r, r)) / 64.0
        if E > 1:
            t["projectors"] = quantized(rng, (E, v, cfg["outputDim"])) / 64.0
        queries = []
        while len(queries) < 12:
            q = quantized(rng, (1, H, 2, d)) / 64.0
            if cfg["scoring"] == "pkm" or min(retrieve(cfg, t, q)[3]) >= 1e-3:
                queries.append(q)
        q = np.concatenate(queries).astype(np.float32)
        idx, w, out, _ = retrieve(cfg, t, q)
        np.save(os.path.join(args.out, f"queries{l}.npy"), q)
        np.save(os.path.join(args.out, f"expected_output{l}.npy"), out.astype(np.float32))
        np.save(os.path.join(args.out, f"expected_indices{l}.npy"), idx.astype(np.int64))
        np.save(os.path.join(args.out, f"expected_weights{l}.npy"), w.astype(np.float32))
        tensors = {n: ("F32", a.astype(np.float32)) for n, a in t.items() if n != "values" or l == 0}
        metadata = {"scoring": cfg["scoring"], "topk": str(cfg["topK"]), "top_m": str(cfg["topM"]),
                    "activation": cfg["activation"], "addressing": cfg["addressing"]}
        if cfg["addressing"] == "keyed":
            metadata["address_key"] = str(cfg["addressKey"])
        write_safetensors(os.path.join(args.out, f"layer{l}.safetensors"), tensors, metadata)
        with open(os.path.join(args.out, f"layer{l}.json"), "w") as f:
            json.dump({"name": f"block{l}.memory", "window": cfg["physicalRows"], "offset": cfg["poolOffset"],
                       "values": l == 0}, f)


if __name__ == "__main__":
    main()
