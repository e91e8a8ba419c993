#!/usr/bin/env python3
"""Writes a small trained-looking memory layer as a user would bring it, plus queries and the
expected results of Spec/RETRIEVAL.md computed by Tools/reference_retrieval.py.

    make_checkpoint.py OUT_DIR [--format safetensors|npy] [--values-dtype f32|f16|bf16]
                               [--addressing table|identity|keyed] [--gate none|gelu]

With --addressing identity or keyed the file holds no virtual_map (keyed: metadata
`addressing` and `address_key`), and the expected results use that addressing. With --gate the
layer is gated (Spec/RETRIEVAL.md, "Gates"): the file holds `gates` [N_p, 3] and metadata
`gate_activation`, and OUT_DIR gate_inputs.npy [20, 3].

OUT_DIR receives memory.safetensors (or memory/ with one .npy per tensor), queries.npy, and
expected_output.npy, expected_indices.npy, expected_weights.npy. The safetensors file is written
by hand from the format description (8-byte header length, JSON header, data), with numpy only.
"""
import argparse
import os
import sys

import numpy as np

from pkmtools.tensorio import f32_to_bf16, write_safetensors
from reference_retrieval import quantized, retrieve


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--format", default="safetensors", choices=["safetensors", "npy"])
    ap.add_argument("--values-dtype", default="bf16", choices=["f32", "f16", "bf16"])
    ap.add_argument("--addressing", default="table", choices=["table", "identity", "keyed"])
    ap.add_argument("--gate", choices=["none", "gelu"])
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(77)
    H, r, c, E, d, nr, nc, v, d_out, k, m = 2, 2, 2, 4, 8, 16, 32, 8, 6, 6, 8
    n_p = nr * nc // E
    cfg = {"scoring": "tucker", "heads": H, "keyDim": d, "gridRows": nr, "gridCols": nc, "rank": r, "cores": c,
           "expansion": E, "physicalRows": n_p, "valueDim": v, "outputDim": d_out, "topK": k, "topM": m,
           "activation": "softmax", "addressing": args.addressing, "addressKey": 12345 if args.addressing == "keyed" else 0}
    t = {"row_keys": quantized(rng, (H, r, nr, d)) / 64.0, "col_keys": quantized(rng, (H, r, nc, d)) / 64.0,
         "cores": quantized(rng, (H, c, r, r)) / 64.0, "projectors": quantized(rng, (E, v, d_out)) / 64.0,
         "values": quantized(rng, (n_p, v)) / 64.0, "virtual_map": rng.permutation(nr * nc).astype(np.int32)}
    gate_inputs = None
    if args.gate:
        cfg.update(gateDim=3, gateActivation=args.gate)
        t["gates"] = quantized(rng, (n_p, 3)) / 64.0
        gate_inputs = (quantized(rng, (20, 3)) / 16.0).astype(np.float32)
    queries = []
    while len(queries) < 20:
        q = quantized(rng, (1, H, 2, d)) / 64.0
        if min(retrieve(cfg, t, q, gate_inputs)[3]) >= 1e-3:
            queries.append(q)
    q = np.concatenate(queries).astype(np.float32)
    idx, w, out, _ = retrieve(cfg, t, q, gate_inputs)
    if gate_inputs is not None:
        np.save(os.path.join(args.out, "gate_inputs.npy"), gate_inputs)
    np.save(os.path.join(args.out, "queries.npy"), q)
    np.save(os.path.join(args.out, "expected_output.npy"), out.astype(np.float32))
    np.save(os.path.join(args.out, "expected_indices.npy"), idx.astype(np.int64))
    np.save(os.path.join(args.out, "expected_weights.npy"), w.astype(np.float32))

    values = {"f32": ("F32", t["values"].astype(np.float32)), "f16": ("F16", t["values"].astype(np.float16)),
              "bf16": ("BF16", f32_to_bf16(t["values"]))}[args.values_dtype]
    tensors = {"model.mem.values": values,
               "row_keys": ("F32", t["row_keys"].astype(np.float32)), "col_keys": ("F32", t["col_keys"].astype(np.float32)),
               "cores": ("F32", t["cores"].astype(np.float32)), "projectors": ("F32", t["projectors"].astype(np.float32)),
               "virtual_map": ("I32", t["virtual_map"])}
    metadata = {"scoring": "tucker", "topk": str(k), "top_m": str(m), "activation": "softmax"}
    if args.gate:
        tensors["gates"] = values[0], {"F32": t["gates"].astype(np.float32), "F16": t["gates"].astype(np.float16),
                                       "BF16": f32_to_bf16(t["gates"])}[values[0]]
        metadata["gate_activation"] = args.gate
    if args.addressing != "table":
        del tensors["virtual_map"]
    if args.addressing == "keyed":
        metadata.update(addressing="keyed", address_key=str(cfg["addressKey"]))
    if args.format == "safetensors":
        write_safetensors(os.path.join(args.out, "memory.safetensors"), tensors, metadata)
    else:
        folder = os.path.join(args.out, "memory")
        os.makedirs(folder, exist_ok=True)
        for name, (dtype, array) in tensors.items():
            if dtype == "BF16":
                sys.exit("bf16 has no .npy dtype; use --values-dtype f32 or f16 with --format npy")
            np.save(os.path.join(folder, name + ".npy"), array)


if __name__ == "__main__":
    main()
