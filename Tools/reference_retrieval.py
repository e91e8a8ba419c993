#!/usr/bin/env python3
"""Reference implementation of Spec/RETRIEVAL.md in numpy (float64), and the generator of the
golden vectors in Spec/golden/.

    reference_retrieval.py generate Spec/golden     write the golden cases
    reference_retrieval.py check Spec/golden        recompute every case and compare

Written from the spec alone; it shares no code with the Swift implementation.
"""
import json
import math
import os
import sys

import numpy as np

MASK64 = (1 << 64) - 1


def mix(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def keyed_bijection(vid, n_v, key):
    b = 2
    while (1 << b) < n_v:
        b += 2
    h = b // 2
    mask = (1 << h) - 1
    x = vid
    while True:
        left, right = x >> h, x & mask
        for rho in range(4):
            f = mix((key ^ ((rho * 0x9E3779B97F4A7C15) & MASK64) ^ right) & MASK64) & mask
            left, right = right, left ^ f
        x = (left << h) | right
        if x < n_v:
            return x


def top(scores, n):
    """Indices of the top n, larger score first, equal scores by smaller index (stable sort)."""
    order = np.argsort(-scores, kind="stable")
    return order[:n]


def activation(x, name):
    if name == "softmax":
        e = np.exp(x - x.max())
        return e / e.sum()
    if name == "none":
        return x
    if name == "relu":
        return np.maximum(x, 0)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-x))
    raise ValueError(name)


def leading_pair(c):
    u, s, vt = np.linalg.svd(c)
    u0, v0 = u[:, 0], vt[0, :]
    if u0[np.argmax(np.abs(u0))] < 0:
        u0, v0 = -u0, -v0
    return u0, v0


def gate_activation(x, name):
    """A gate dot's activation (Spec/RETRIEVAL.md, "Gates"): none, or GELU as x·Φ(x)."""
    return x if name == "none" else 0.5 * x * (1 + math.erf(x / math.sqrt(2)))


def retrieve(cfg, t, queries, gate_inputs=None):
    """Returns (indices [B,H,k], weights [B,H,k,c], output [B,d_out], margins) in float64. A gated
    layer (cfg "gateDim" > 0) reads t["gates"] [pool rows, g] and gate_inputs [B, g]."""
    H, k, c, v = cfg["heads"], cfg["topK"], cfg["cores"], cfg["valueDim"]
    n_row, n_col = cfg["gridRows"], cfg["gridCols"]
    n_p, e = cfg["physicalRows"], cfg["expansion"]
    n_v = n_row * n_col
    B = queries.shape[0]
    rk, ck = t["row_keys"].astype(np.float64), t["col_keys"].astype(np.float64)
    values = t["values"].astype(np.float64)
    indices = np.zeros((B, H, k), dtype=np.int64)
    weights = np.zeros((B, H, k, c))
    out = np.zeros((B, cfg["outputDim"]))
    margins = []

    def gap(scores, selected_count):
        s = np.sort(scores)[::-1]
        n = min(selected_count + 1, len(s))
        return np.min(np.abs(np.diff(s[:n]))) if n > 1 else np.inf

    for b in range(B):
        acc = np.zeros((e, v))
        for h in range(H):
            q_row, q_col = queries[b, h, 0].astype(np.float64), queries[b, h, 1].astype(np.float64)
            s_row = rk[h] @ q_row  # [r, n_row]
            s_col = ck[h] @ q_col
            if cfg["scoring"] == "pkm":
                total = (s_row[0][:, None] + s_col[0][None, :]).reshape(-1)
                sel = top(total, k)
                per_core = total[sel][:, None]
            else:
                cores = t["cores"][h].astype(np.float64)  # [c, r, r]
                if cfg["scoring"] == "tucker-exact":
                    rows, cols = np.arange(n_row), np.arange(n_col)
                else:
                    if "row_proj" in t:
                        u, w = t["row_proj"][h].astype(np.float64), t["col_proj"][h].astype(np.float64)
                    else:
                        u, w = leading_pair(cores.sum(axis=0))
                    row_rank, col_rank = u @ s_row, w @ s_col
                    rows, cols = top(row_rank, cfg["topM"]), top(col_rank, cfg["topM"])
                    margins += [gap(row_rank, cfg["topM"]), gap(col_rank, cfg["topM"])]
                # score_t(i, j) over the kept rows x cols, in vid order so that ties break by vid.
                rows_sorted, cols_sorted = np.sort(rows), np.sort(cols)
                st = np.einsum("ai,tab,bj->tij", s_row[:, rows_sorted], cores, s_col[:, cols_sorted])
                vids = (rows_sorted[:, None] * n_col + cols_sorted[None, :]).reshape(-1)
                st = st.reshape(c, -1)
                total = st.sum(axis=0)
                order = top(total, k)
                margins.append(gap(total, k))
                sel = vids[order]
                per_core = st[:, order].T  # [k, c]
            indices[b, h] = sel
            for tt in range(c):
                weights[b, h, :, tt] = activation(per_core[:, tt], cfg["activation"])
            for s_i, vid in enumerate(sel):
                if cfg["addressing"] == "table":
                    ident = int(t["virtual_map"][vid])
                elif cfg["addressing"] == "keyed":
                    ident = keyed_bijection(int(vid), n_v, cfg["addressKey"])
                else:
                    ident = int(vid)
                row, p = ident % n_p, ident // n_p
                # The layer's rows are a window of the pool (the value table) from poolOffset.
                row = (row + cfg.get("poolOffset", 0)) % cfg.get("poolRows", n_p)
                width = v // c
                gate = 1.0
                if cfg.get("gateDim", 0):
                    dot = float(np.dot(gate_inputs[b].astype(np.float64), t["gates"][row].astype(np.float64)))
                    gate = gate_activation(dot, cfg["gateActivation"])
                for tt in range(c):
                    acc[p, tt * width:(tt + 1) * width] += weights[b, h, s_i, tt] * gate * values[row, tt * width:(tt + 1) * width]
        if "projectors" in t:
            proj = t["projectors"].astype(np.float64)
            out[b] = sum(acc[p] @ proj[p] for p in range(e))
        else:
            out[b] = acc[0]
    return indices, weights, out, margins


# ---- golden cases ----------------------------------------------------------------------

CASES = [
    # name, scoring, H, d, grid, r, c, E, v, d_out(None = no projectors), k, m, activation, addressing, extras
    ("pkm_h1_softmax", "pkm", 1, 8, (16, 16), 1, 1, 1, 8, None, 4, 0, "softmax", "identity", {}),
    ("pkm_h4_nonsquare_relu_proj", "pkm", 4, 8, (8, 32), 1, 1, 1, 8, 6, 8, 0, "relu", "identity", {}),
    ("pkm_e4_table_sigmoid", "pkm", 2, 8, (16, 16), 1, 1, 4, 8, 5, 6, "0", "sigmoid", "table", {}),
    ("pkm_e4_keyed_none", "pkm", 4, 8, (16, 12), 1, 1, 4, 8, 5, 5, 0, "none", "keyed", {}),
    ("tucker_r2_c2_softmax", "tucker", 4, 8, (16, 16), 2, 2, 1, 8, None, 4, 6, "softmax", "identity", {}),
    ("tucker_h1_nonsquare_e4_table_relu", "tucker", 1, 8, (8, 32), 2, 2, 4, 8, 6, 5, 6, "relu", "table", {}),
    ("tucker_proj_e4_keyed_sigmoid", "tucker", 4, 8, (16, 16), 2, 2, 4, 8, 6, 4, 5, "sigmoid", "keyed", {"proj": True}),
    ("tucker_c1_none", "tucker", 2, 8, (12, 16), 2, 1, 1, 8, None, 3, 4, "none", "identity", {}),
    ("tucker_exact_softmax", "tucker-exact", 2, 8, (8, 16), 2, 2, 4, 8, 6, 5, 0, "softmax", "table", {}),
    # Keys from {-1, 0, 1}/64: many equal scores, so the tie rule decides most selections.
    ("pkm_ties_softmax", "pkm", 2, 4, (16, 16), 1, 1, 1, 4, None, 12, 0, "softmax", "identity", {"spread": 1}),
    # A window of 64 rows of a 100-row pool from row 70: rows 70..99, then 0..33.
    ("pkm_e4_keyed_pool_window", "pkm", 2, 8, (16, 16), 1, 1, 4, 8, 5, 6, 0, "softmax", "keyed", {"pool": (100, 70)}),
    # Gated layers (Spec/RETRIEVAL.md, "Gates"): each slot's weight times act(u_b · G[row]).
    ("pkm_gate_gelu", "pkm", 2, 8, (16, 16), 1, 1, 1, 8, None, 6, 0, "softmax", "identity", {"gate": (4, "gelu")}),
    ("tucker_c2_e4_keyed_gate_window", "tucker", 2, 8, (16, 16), 2, 2, 4, 8, 5, 5, 6, "none", "keyed",
     {"gate": (3, "none"), "pool": (100, 30)}),
]


def quantized(rng, shape, spread=64):
    """Small multiples of 1/64: exact in binary32, so PKM sums are exact (and tie exactly)."""
    return rng.integers(-spread, spread + 1, size=shape).astype(np.int64)


def generate(directory, batch=6):
    os.makedirs(directory, exist_ok=True)
    for seed, (name, scoring, H, d, (nr, nc), r, c, E, v, d_out, k, m, act, addressing, extra) in enumerate(CASES):
        m = int(m)
        rng = np.random.default_rng(1000 + seed)
        n_v = nr * nc
        n_p = n_v // E
        cfg = {"scoring": scoring, "heads": H, "keyDim": d, "gridRows": nr, "gridCols": nc, "rank": r,
               "cores": c, "expansion": E, "physicalRows": n_p, "valueDim": v,
               "outputDim": d_out if d_out else v, "topK": k, "topM": m, "activation": act,
               "addressing": addressing, "addressKey": 0x5EED0000 + seed}
        pool_rows = n_p
        if "pool" in extra:
            pool_rows, cfg["poolOffset"] = extra["pool"]
            cfg["poolRows"] = pool_rows
        spread = extra.get("spread", 64)
        ints = {"row_keys": quantized(rng, (H, r, nr, d), spread), "col_keys": quantized(rng, (H, r, nc, d), spread),
                "values": quantized(rng, (pool_rows, v))}
        if scoring != "pkm":
            ints["cores"] = quantized(rng, (H, c, r, r))
        if d_out:
            ints["projectors"] = quantized(rng, (E, v, d_out))
        if extra.get("proj"):
            ints["row_proj"] = quantized(rng, (H, r))
            ints["col_proj"] = quantized(rng, (H, r))
        if "gate" in extra:
            g, cfg["gateActivation"] = extra["gate"]
            cfg["gateDim"] = g
            ints["gates"] = quantized(rng, (pool_rows, g))
        tensors = {n: a / 64.0 for n, a in ints.items()}
        if addressing == "table":
            tensors["virtual_map"] = rng.permutation(n_v).astype(np.int64)
        # Draw queries until every Tucker selection keeps a clear gap (see "Precision").
        queries_int, rows = [], 0
        gates_int = quantized(rng, (batch, cfg["gateDim"])) if "gate" in extra else None
        gate_inputs = None if gates_int is None else gates_int / 64.0
        while rows < batch:
            q = quantized(rng, (1, H, 2, d), spread)
            _, _, _, margins = retrieve(cfg, tensors, q / 64.0, gate_inputs)
            if scoring == "pkm" or min(margins) >= 1e-3:
                queries_int.append(q)
                rows += 1
        q_int = np.concatenate(queries_int)
        idx, w, out, _ = retrieve(cfg, tensors, q_int / 64.0, gate_inputs)
        doc = {"name": name, "config": cfg, "scale": 64,
               "tensors": {n: {"shape": list(a.shape), "ints": a.reshape(-1).tolist()} for n, a in ints.items()},
               "queries": {"shape": list(q_int.shape), "ints": q_int.reshape(-1).tolist()},
               "expected": {"indices": idx.reshape(-1).tolist(),
                            "weights": [float(x) for x in w.reshape(-1)],
                            "output": [float(x) for x in out.reshape(-1)]}}
        if addressing == "table":
            doc["virtual_map"] = tensors["virtual_map"].tolist()
        if gates_int is not None:
            doc["gate_inputs"] = {"shape": list(gates_int.shape), "ints": gates_int.reshape(-1).tolist()}
        with open(os.path.join(directory, name + ".json"), "w") as f:
            json.dump(doc, f, separators=(",", ":"))
        print(f"{name}: B={batch} H={H} grid={nr}x{nc} k={k} -> {os.path.getsize(os.path.join(directory, name + '.json'))} bytes")


def load(path):
    doc = json.load(open(path))
    scale = doc["scale"]
    t = {n: np.array(x["ints"], dtype=np.float64).reshape(x["shape"]) / scale for n, x in doc["tensors"].items()}
    if "virtual_map" in doc:
        t["virtual_map"] = np.array(doc["virtual_map"], dtype=np.int64)
    q = np.array(doc["queries"]["ints"], dtype=np.float64).reshape(doc["queries"]["shape"]) / scale
    if "gate_inputs" in doc:
        doc["gate_inputs_array"] = np.array(doc["gate_inputs"]["ints"], dtype=np.float64).reshape(doc["gate_inputs"]["shape"]) / scale
    return doc, t, q


def check(directory):
    bad = 0
    for name in sorted(os.listdir(directory)):
        doc, t, q = load(os.path.join(directory, name))
        idx, w, out, _ = retrieve(doc["config"], t, q, doc.get("gate_inputs_array"))
        e = doc["expected"]
        ok = (idx.reshape(-1).tolist() == e["indices"] and np.allclose(w.reshape(-1), e["weights"], rtol=1e-9)
              and np.allclose(out.reshape(-1), e["output"], rtol=1e-9))
        print(f"{name}: {'ok' if ok else 'MISMATCH'}")
        bad += not ok
    return bad


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("generate", "check"):
        print(__doc__)
        sys.exit(2)
    if sys.argv[1] == "generate":
        generate(sys.argv[2])
    else:
        sys.exit(1 if check(sys.argv[2]) else 0)
