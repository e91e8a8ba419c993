"""State-dict converters: the layouts of the layers users bring, checked against brute force
written from each layer's documented shapes (not from the converter)."""
import numpy as np
import pytest

import pkmstore
import pkmstore.convert


def brute_force(q_row, q_col, row_keys, col_keys, values, k):
    """Per head: every slot (i, j) scored q_row·row_keys[i] + q_col·col_keys[j], the top k by
    score (ties by slot id), softmax weights, Σ weights x values[i·n + j] over heads."""
    out = np.zeros(values.shape[1])
    chosen = []
    for h in range(q_row.shape[0]):
        scores = (row_keys[h] @ q_row[h])[:, None] + (col_keys[h] @ q_col[h])[None, :]
        flat = scores.reshape(-1)
        top = np.lexsort((np.arange(flat.size), -flat))[:k]
        w = np.exp(flat[top] - flat[top].max())
        w /= w.sum()
        out += w @ values[top]
        chosen.append(sorted(top.tolist()))
    return out, chosen


def test_meta_memory_keys_and_queries(tmp_path):
    """Meta's HashingMemory: keys [2·H·n, half] viewed as [H, 2, n, half]; the query MLP's output
    [N, H·k_dim] viewed as [N, H, k_dim], rows scored by its first half."""
    rng = np.random.default_rng(11)
    heads, n, half, v, knn = 3, 12, 6, 10, 5
    state = {"keys": rng.uniform(-1, 1, (2 * heads * n, half)).astype(np.float32),
             "values.weight": rng.standard_normal((n * n, v)).astype(np.float32)}
    path = str(tmp_path / "meta.pkm")
    pkmstore.convert.from_state_dict("meta-memory", state, {"heads": heads, "knn": knn}).write(path)
    layer = pkmstore.MemoryLayer(path)
    projection = rng.standard_normal((4, heads * 2 * half)).astype(np.float32)     # the query MLP's output
    out, idx, _ = layer.lookup(np.ascontiguousarray(projection.reshape(4, heads, 2, half)))
    grid = state["keys"].reshape(heads, 2, n, half)
    for b in range(4):
        q = projection[b].reshape(heads, 2 * half)
        expected, chosen = brute_force(q[:, :half], q[:, half:], grid[:, 0], grid[:, 1], state["values.weight"], knn)
        np.testing.assert_allclose(out[b], expected, rtol=1e-5, atol=1e-5)
        assert [sorted(r) for r in idx[b].tolist()] == chosen


def test_model_parallel_value_columns_are_joined(tmp_path):
    rng = np.random.default_rng(12)
    keys = rng.uniform(-1, 1, (2 * 2 * 8, 4)).astype(np.float32)
    values = rng.standard_normal((64, 12)).astype(np.float32)
    ranks = [{"keys": keys, "values.weight": values[:, :6]}, {"keys": keys, "values.weight": values[:, 6:]}]
    converted = pkmstore.convert.from_state_dict("meta-memory", ranks, {"heads": 2, "knn": 4})
    assert np.array_equal(converted.tensors["values"], values)
    path = converted.write(str(tmp_path / "mp.pkm"))
    with pkmstore.open(path) as store:
        assert np.array_equal(store.rows(np.arange(64)), values)


def test_what_the_contract_cannot_express_is_refused():
    keys = np.zeros((32, 4), np.float32)
    with pytest.raises(pkmstore.ArgumentError, match="PEER layer needs both"):
        pkmstore.convert.from_state_dict("meta-memory", {"keys": keys, "values_u.weight": keys}, {"heads": 2, "knn": 4})
    with pytest.raises(pkmstore.ArgumentError, match="mem_share_values"):
        pkmstore.convert.from_state_dict("meta-memory", {"keys": keys}, {"heads": 2, "knn": 4})
    with pytest.raises(pkmstore.ArgumentError, match="needs \\[32"):
        pkmstore.convert.from_state_dict("meta-memory", {"keys": np.zeros((30, 4), np.float32),
                                                         "values.weight": np.zeros((64, 3), np.float32)}, {"heads": 2, "knn": 4})
    with pytest.raises(pkmstore.ArgumentError, match="unknown layer kind"):
        pkmstore.convert.from_state_dict("ultramem-v3", {}, {})
    with pytest.raises(pkmstore.ArgumentError, match="concat_values_and_combine"):
        pkmstore.convert.from_state_dict("pkm-pytorch", {"keys": np.zeros((2, 4, 2, 3), np.float32)}, {"topk": 2})


def test_the_served_meta_module_applies_the_dense_parts(tmp_path):
    torch = pytest.importorskip("torch")
    import pkmstore.torch as pt

    class Memory(torch.nn.Module):
        """The attributes HashingMemory's forward uses, with its documented shapes."""

        def __init__(self):
            super().__init__()
            self.heads, self.knn, self.swilu_proj, self.v_proj, self.use_peer_variant = 2, 4, True, True, False
            self.keys = torch.nn.Parameter(torch.rand(2 * 2 * 8, 6) - 0.5)
            self.values = torch.nn.EmbeddingBag(64, 10, mode="sum")
            self.query_proj = torch.nn.Linear(16, 2 * 12)
            self.value_proj = torch.nn.Linear(10, 16)
            self.swilu_projection = torch.nn.Linear(16, 10)
            self.gating = torch.nn.Linear(16, 1)

    torch.manual_seed(3)
    memory = Memory().eval()
    served = pt.from_meta_memory(memory, str(tmp_path / "m.pkm"))
    x = torch.randn(2, 3, 16)
    y = served(x)
    flat = x.reshape(-1, 16)
    with torch.no_grad():
        q = memory.query_proj(flat).numpy().reshape(6, 2, 12)
        grid = memory.keys.detach().numpy().reshape(2, 2, 8, 6)
        sums = np.stack([brute_force(q[b, :, :6], q[b, :, 6:], grid[:, 0], grid[:, 1], memory.values.weight.numpy(), 4)[0]
                         for b in range(6)]).astype(np.float32)
        out = torch.from_numpy(sums)
        expected = memory.value_proj(out * torch.nn.functional.silu(memory.swilu_projection(flat)))
        expected = torch.sigmoid(memory.gating(flat)) * expected
    np.testing.assert_allclose(y.reshape(6, 16).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def ultramem_reference(sd, x, knn, eps=1e-5):
    """UltraMem's forward as its public code defines it (TDQKR with the rank-1 buffers, per-core
    scores without activation, shuffled addresses, MCS chunks, value expansion, values_proj),
    written out in float64 from that definition."""
    def ln(a, w, b):
        m = a.mean(-1, keepdims=True)
        return (a - m) / np.sqrt(((a - m) ** 2).mean(-1, keepdims=True) + eps) * w + b
    q = ln((x @ sd["query_proj.weight"].T).reshape(len(x), 2, -1), sd["query_norm.weight"], sd["query_norm.bias"])
    keys = np.moveaxis(ln(np.moveaxis(sd["keys"], -1, -2), sd["keys_norm.weight"], sd["keys_norm.bias"]), -1, -2)
    heads, _, n, d, r = keys.shape
    cores = [sd[k] for k in sorted(k for k in sd if k.startswith("tucker_core."))]
    table, vp, shuffle = sd["values_for_look_up"], sd["values_proj.weight"], sd["shuffle_index"]
    value_num, v = table.shape
    e = vp.shape[1] // v
    out, chosen = [], []
    for b in range(len(x)):
        acc = np.zeros((e, v))
        picks = []
        for h in range(heads):
            s1 = np.einsum("d,ndr->nr", q[b, 0], keys[h, 0])
            s2 = np.einsum("d,ndr->nr", q[b, 1], keys[h, 1])
            i1 = np.argsort(-(s1 @ sd["tucker_core_u"].reshape(heads, r)[h]), kind="stable")[:knn]
            i2 = np.argsort(-(s2 @ sd["tucker_core_v"].reshape(heads, r)[h]), kind="stable")[:knn]
            per_core = np.stack([s1[i1] @ c[h] @ s2[i2].T for c in cores])          # [c, knn, knn]
            total = per_core.sum(0).reshape(-1)
            best = np.argsort(-total, kind="stable")[:knn]
            for p in best:
                vid = i1[p // knn] * n + i2[p % knn]
                picks.append(int(vid))
                shuffled = shuffle[vid]
                row, group = shuffled % value_num, shuffled // value_num
                chunk = v // len(cores)
                for t in range(len(cores)):
                    acc[group, t * chunk:(t + 1) * chunk] += per_core[t].reshape(-1)[p] * table[row, t * chunk:(t + 1) * chunk]
        out.append(acc.reshape(-1) @ vp.T)
        chosen.append(sorted(picks))
    return np.array(out), chosen


def test_ultramem_layer_converts_exactly(tmp_path):
    """UltraMem's state dict (random, with its names and shapes) converted and served gives the
    reference forward's slots and outputs; skipping its key LayerNorm would not."""
    torch = pytest.importorskip("torch")
    import pkmstore.torch as pt
    rng = np.random.default_rng(21)
    hidden, d, r, heads, knum, expand, v, knn, cores = 24, 8, 2, 2, 8, 4, 12, 5, 2
    n = knum * int(expand ** 0.5)
    sd = {"query_proj.weight": rng.standard_normal((2 * d, hidden)) / 4,
          "query_norm.weight": rng.normal(1, 0.2, d), "query_norm.bias": rng.normal(0, 0.1, d),
          "keys": rng.standard_normal((heads, 2, n, d, r)) / 3,
          "keys_norm.weight": rng.normal(1, 0.2, d), "keys_norm.bias": rng.normal(0, 0.1, d),
          "values_for_look_up": rng.standard_normal((knum * knum, v)) * 0.02,
          "values_proj.weight": rng.standard_normal((hidden, expand * v)) / 7,
          "shuffle_index": rng.permutation(expand * knum * knum),
          "tucker_core_u": rng.standard_normal((1, heads, 1, r)), "tucker_core_v": rng.standard_normal((1, heads, 1, r))}
    for i in range(cores):
        sd[f"tucker_core.{i}"] = rng.uniform(0, 1, (heads, r, r))
    sd = {k: (a.astype(np.float32) if a.dtype.kind == "f" else a) for k, a in sd.items()}
    state = {k: torch.from_numpy(a) for k, a in sd.items()}
    x = rng.standard_normal((6, hidden)).astype(np.float32)
    expected, chosen = ultramem_reference({k: a.astype(np.float64) if a.dtype.kind == "f" else a for k, a in sd.items()},
                                          x.astype(np.float64), knn)
    qn = torch.nn.LayerNorm(d)
    proj = torch.nn.Linear(hidden, 2 * d, bias=False)
    with torch.no_grad():
        qn.weight.copy_(torch.from_numpy(sd["query_norm.weight"]))
        qn.bias.copy_(torch.from_numpy(sd["query_norm.bias"]))
        proj.weight.copy_(torch.from_numpy(sd["query_proj.weight"]))
    outputs = {}
    for label, config in [("converted", {"knn": knn}), ("without the key norm", {"knn": knn, "key_norm": lambda a: a})]:
        path = pkmstore.convert.from_state_dict("ultramem", state, config).write(str(tmp_path / f"{len(outputs)}.pkm"))
        served = pt.StoreMemory(path, lambda x: qn(proj(x).reshape(-1, 2, d)), layout="shared")
        outputs[label] = (served(torch.from_numpy(x)).numpy(), [sorted(row.reshape(-1).tolist()) for row in served.last_indices])
    # The same state dict saved as safetensors and imported by the library's own conversion
    # (memtool import --layout ultramem), with k from the file's metadata.
    from pkmtools.tensorio import write_safetensors
    layer = {k: a for k, a in sd.items() if not k.startswith("query_")}
    saved = str(tmp_path / "ultramem.safetensors")
    write_safetensors(saved, {k: ("F32" if a.dtype.kind == "f" else "I64", a.astype(np.int64) if a.dtype.kind != "f" else a)
                              for k, a in layer.items()}, {"knn": str(knn)})
    imported = str(tmp_path / "imported.pkm")
    pkmstore.import_(imported, saved, layout="ultramem")
    served = pt.StoreMemory(imported, lambda x: qn(proj(x).reshape(-1, 2, d)), layout="shared")
    outputs["imported"] = (served(torch.from_numpy(x)).numpy(), [sorted(row.reshape(-1).tolist()) for row in served.last_indices])
    for label in ["converted", "imported"]:
        got, slots = outputs[label]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5, err_msg=label)
        assert slots == chosen, label
    assert outputs["without the key norm"][1] != chosen


def ultramem_v2_reference(sd, ranks, x, knn, key_expand, offset, glu, eps=1e-5):
    """UltraMemV2's forward (its CUDA/CPU path, `UltraMemLayerV2.forward` with
    `mem_q_for_each_tucker_rank` and tucker rank 2), written out in float64 from its code: head h
    takes the row query q[:, h // 2, 0] and the column query q[:, h // 2, 1]; each slot's per-core
    scores are scaled by the pre-value gate g = act(pre_values_proj(x) · pre_values[row]) (the
    ranks' partial dots summed), and each rank weights its own value columns in core chunks
    (FusedLookup), the ranks' columns concatenated per group before values_proj."""
    def ln(a, w, b):
        m = a.mean(-1, keepdims=True)
        return (a - m) / np.sqrt(((a - m) ** 2).mean(-1, keepdims=True) + eps) * w + b
    from math import erf, sqrt
    keys = np.moveaxis(ln(np.moveaxis(sd["keys"], -1, -2), sd["keys_norm.weight"], sd["keys_norm.bias"]), -1, -2)
    heads, _, n, d, r = keys.shape
    q = ln((x @ sd["query_proj.weight"].T).reshape(len(x), 2, 2, d), sd["query_norm.weight"], sd["query_norm.bias"])
    cores = [sd[k] for k in sorted(k for k in sd if k.startswith("tucker_core."))]
    c = len(cores)
    pool = ranks[0]["values_for_look_up"].shape[0]
    value_num = len(sd["shuffle_index"]) // (key_expand * key_expand)
    groups = key_expand * key_expand
    vp = sd["values_proj.weight"]
    out, chosen = [], []
    for b in range(len(x)):
        pre_input = sd["pre_values_proj.weight"] @ x[b]
        locals_ = [np.zeros((groups, rk["values_for_look_up"].shape[1])) for rk in ranks]
        picks = []
        for h in range(heads):
            s1 = np.einsum("d,ndr->nr", q[b, h // 2, 0], keys[h, 0])
            s2 = np.einsum("d,ndr->nr", q[b, h // 2, 1], keys[h, 1])
            i1 = np.argsort(-(s1 @ sd["tucker_core_u"].reshape(heads, r)[h]), kind="stable")[:knn]
            i2 = np.argsort(-(s2 @ sd["tucker_core_v"].reshape(heads, r)[h]), kind="stable")[:knn]
            per_core = np.stack([s1[i1] @ core[h] @ s2[i2].T for core in cores])    # [c, knn, knn]
            best = np.argsort(-per_core.sum(0).reshape(-1), kind="stable")[:knn]
            for p in best:
                vid = i1[p // knn] * n + i2[p % knn]
                picks.append(int(vid))
                shuffled = sd["shuffle_index"][vid]
                row, group = ((shuffled % value_num) + offset) % pool, shuffled // value_num
                dot = sum(rk["pre_values_for_look_up"][row] @ pre_input[j * rk["pre_values_for_look_up"].shape[1]:(j + 1) * rk["pre_values_for_look_up"].shape[1]]
                          for j, rk in enumerate(ranks))
                gate = 0.5 * dot * (1 + erf(dot / sqrt(2))) if glu else dot
                for acc, rk in zip(locals_, ranks):
                    local = rk["values_for_look_up"][row]
                    chunk = len(local) // c
                    for t in range(c):
                        acc[group, t * chunk:(t + 1) * chunk] += per_core[t].reshape(-1)[p] * gate * local[t * chunk:(t + 1) * chunk]
        full = np.concatenate(locals_, axis=1)                                     # [groups, v]: ranks' columns per group
        if vp.shape[1] == full.shape[1]:                                          # value_expand_time 1: groups summed
            full = full.sum(0, keepdims=True)
        out.append(full.reshape(-1) @ vp.T)
        chosen.append(sorted(picks))
    return np.array(out), chosen


@pytest.mark.parametrize("ranks, value_expand, glu", [(1, "all", True), (2, "one", False)])
def test_ultramem_v2_layer_converts_exactly(tmp_path, ranks, value_expand, glu):
    """UltraMemV2's key layer and value layer (random, with their names and shapes; the values'
    columns split across `ranks` as vertical parallelism saves them) converted and served through
    `pkmstore.torch.StoreMemory` give the reference forward's slots and outputs: a window of a
    shared pool from the layer's offset, the pre-value gate, 4 heads sharing queries by pairs, MCS
    chunks per rank. Serving it without its gate, or without reordering the ranks' columns, would not."""
    torch = pytest.importorskip("torch")
    import pkmstore.torch as pt
    rng = np.random.default_rng(31 + ranks)
    hidden, d, heads, knum, key_expand, v, pre_v, knn, cores, layers = 24, 8, 4, 6, 2, 12, 6, 5, 2, 2
    n, groups = knum * key_expand, key_expand * key_expand
    pool = knum * knum * layers
    sd = {"query_proj.weight": rng.standard_normal((2 * 2 * d, hidden)) / 4,
          "query_norm.weight": rng.normal(1, 0.2, d), "query_norm.bias": rng.normal(0, 0.1, d),
          "keys": rng.standard_normal((heads, 2, n, d, 2)) / 3,
          "keys_norm.weight": rng.normal(1, 0.2, d), "keys_norm.bias": rng.normal(0, 0.1, d),
          "values_proj.weight": rng.standard_normal((hidden, (groups if value_expand == "all" else 1) * v)) / 7,
          "pre_values_proj.weight": rng.standard_normal((pre_v, hidden)) / 5,
          "shuffle_index": rng.permutation(groups * knum * knum),
          "tucker_core_u": rng.standard_normal((1, heads, 1, 2)), "tucker_core_v": rng.standard_normal((1, heads, 1, 2))}
    for i in range(cores):
        sd[f"tucker_core.{i}"] = rng.uniform(0, 1, (heads, 2, 2))
    values, gates = rng.standard_normal((pool, v)) * 0.5, rng.standard_normal((pool, pre_v)) * 0.5
    value_sds = [{"values_for_look_up": values[:, k * v // ranks:(k + 1) * v // ranks].astype(np.float32),
                  "pre_values_for_look_up": gates[:, k * pre_v // ranks:(k + 1) * pre_v // ranks].astype(np.float32)}
                 for k in range(ranks)]
    sd = {k: (a.astype(np.float32) if a.dtype.kind == "f" else a) for k, a in sd.items()}
    x = rng.standard_normal((6, hidden)).astype(np.float32)
    f64 = {k: a.astype(np.float64) if a.dtype.kind == "f" else a for k, a in sd.items()}
    offset = 1 * (pool // layers)
    expected, chosen = ultramem_v2_reference(f64, [{k: a.astype(np.float64) for k, a in r.items()} for r in value_sds],
                                             x.astype(np.float64), knn, key_expand, offset, glu)
    qn, proj, pre = torch.nn.LayerNorm(d), torch.nn.Linear(hidden, 4 * d, bias=False), torch.nn.Linear(hidden, pre_v, bias=False)
    with torch.no_grad():
        qn.weight.copy_(torch.from_numpy(sd["query_norm.weight"]))
        qn.bias.copy_(torch.from_numpy(sd["query_norm.bias"]))
        proj.weight.copy_(torch.from_numpy(sd["query_proj.weight"]))
        pre.weight.copy_(torch.from_numpy(sd["pre_values_proj.weight"]))
    pairs = [h // 2 for h in range(heads)]

    def queries(x):
        return qn(proj(x).reshape(-1, 2, 2, d))[:, pairs]                  # [N, H, 2, d]: head h reads pair h // 2

    state = {k: torch.from_numpy(a) for k, a in sd.items()}
    config = {"knn": knn, "key_expand_time": key_expand, "layer_id": 1, "mem_layer_num": layers, "use_glu_act": glu}
    converted = pkmstore.convert.from_state_dict("ultramem-v2", state, config,
                                                 values=[{k: torch.from_numpy(a) for k, a in r.items()} for r in value_sds])
    path = converted.write(str(tmp_path / "v2.pkm"))
    served = pt.StoreMemory(path, queries, layout="head-side", gate_input=pre)
    got = served(torch.from_numpy(x)).numpy()
    assert served.layer.gate_dim == pre_v and served.layer.gate_activation == ("gelu" if glu else "none")
    assert [sorted(row.reshape(-1).tolist()) for row in served.last_indices] == chosen
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # The same store's layer without its gate (a gate of ones) is another layer.
    ungated = f64 | {"pre_values_proj.weight": np.zeros_like(f64["pre_values_proj.weight"])}
    assert not np.allclose(ultramem_v2_reference(ungated, [{k: a.astype(np.float64) for k, a in r.items()} for r in value_sds],
                                                 x.astype(np.float64), knn, key_expand, offset, glu)[0], got, rtol=1e-3)
    # Two layers of the model reading one pool: stored once, each layer its own window.
    other = pkmstore.convert.from_state_dict("ultramem-v2", state, dict(config, layer_id=0),
                                             values=[{k: torch.from_numpy(a) for k, a in r.items()} for r in value_sds])
    both = str(tmp_path / "both.pkm")
    pkmstore.convert.write_layers(both, {"block0": other, "block1": converted})
    with pkmstore.open(both) as store:
        assert (store.layout.rows, store.layout.dim) == (pool, v + pre_v)
    again = pt.StoreMemory(both, queries, layout="head-side", gate_input=pre, layer="block1")
    np.testing.assert_allclose(again(torch.from_numpy(x)).numpy(), got, rtol=1e-6, atol=1e-7)
    with pytest.raises(pkmstore.ArgumentError, match="gate_input"):
        pkmstore.MemoryLayer(path).lookup(queries(torch.from_numpy(x)).detach().contiguous())
    if ranks == 1 and value_expand == "all":
        # memtool import --layout ultramem from one file of both layers' tensors, the window given.
        from pkmtools.tensorio import write_safetensors
        layer = {k: a for k, a in sd.items() if not k.startswith(("query_", "pre_values_proj"))} | value_sds[0]
        saved = str(tmp_path / "v2.safetensors")
        write_safetensors(saved, {k: ("F32", a) if a.dtype.kind == "f" else ("I64", a.astype(np.int64)) for k, a in layer.items()},
                          {"knn": str(knn), "mem_use_glu_act": "true" if glu else "false"})
        imported = str(tmp_path / "imported.pkm")
        pkmstore.import_(imported, saved, layout="ultramem", window=knum * knum, pool_offset=offset)
        served = pt.StoreMemory(imported, queries, layout="head-side", gate_input=pre)
        np.testing.assert_allclose(served(torch.from_numpy(x)).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_the_peer_variant_is_a_gated_layer(tmp_path):
    """Meta's PEER variant: per head the top k slots by q_row·row_key + q_col·col_key, softmax
    weights, each times gelu(x · values_u[slot]), summed over values_v (HashingMemory.forward's
    PEER branch), then the optional sigmoid gating: served through a gated store."""
    torch = pytest.importorskip("torch")
    import pkmstore.torch as pt
    from math import erf, sqrt

    class Memory(torch.nn.Module):
        """The attributes HashingMemory's forward uses in its PEER variant, with their shapes."""

        def __init__(self):
            super().__init__()
            self.heads, self.knn, self.swilu_proj, self.v_proj, self.use_peer_variant = 2, 4, True, True, True
            self.keys = torch.nn.Parameter(torch.rand(2 * 2 * 8, 6) - 0.5)
            self.values_u = torch.nn.Embedding(64, 16)
            self.values_v = torch.nn.Embedding(64, 16)
            self.query_proj = torch.nn.Linear(16, 2 * 12)
            self.gating = torch.nn.Linear(16, 1)

    torch.manual_seed(5)
    memory = Memory().eval()
    served = pt.from_meta_memory(memory, str(tmp_path / "peer.pkm"))
    assert served.layer.gate_dim == 16 and served.layer.gate_activation == "gelu"
    x = torch.randn(2, 3, 16)
    y = served(x)
    flat = x.reshape(-1, 16).numpy().astype(np.float64)
    with torch.no_grad():
        q = memory.query_proj(x.reshape(-1, 16)).numpy().astype(np.float64).reshape(6, 2, 12)
        grid = memory.keys.detach().numpy().astype(np.float64).reshape(2, 2, 8, 6)
        u, v = memory.values_u.weight.numpy().astype(np.float64), memory.values_v.weight.numpy().astype(np.float64)
        gating = torch.sigmoid(memory.gating(x.reshape(-1, 16))).numpy()
    expected = np.zeros((6, 16))
    for b in range(6):
        for h in range(2):
            scores = ((grid[h, 0] @ q[b, h, :6])[:, None] + (grid[h, 1] @ q[b, h, 6:])[None, :]).reshape(-1)
            top = np.lexsort((np.arange(64), -scores))[:4]
            w = np.exp(scores[top] - scores[top].max())
            w /= w.sum()
            for slot, weight in zip(top, w):
                dot = flat[b] @ u[slot]
                expected[b] += weight * 0.5 * dot * (1 + erf(dot / sqrt(2))) * v[slot]
    expected *= gating
    np.testing.assert_allclose(y.reshape(6, 16).numpy(), expected, rtol=1e-5, atol=1e-6)
    # memtool import --layout meta-memory reads the PEER variant's state dict as saved.
    from pkmtools.tensorio import write_safetensors
    saved = str(tmp_path / "peer.safetensors")
    write_safetensors(saved, {k: ("F32", t.detach().numpy()) for k, t in memory.state_dict().items()
                              if k in ("keys", "values_u.weight", "values_v.weight")}, {"topk": "4"})
    imported = str(tmp_path / "imported.pkm")
    pkmstore.import_(imported, saved, layout="meta-memory")
    again = pt.StoreMemory(imported, memory.query_proj, layout="head-side", gate_input=lambda x: x,
                           after=lambda out, x: torch.sigmoid(memory.gating(x)) * out)
    np.testing.assert_allclose(again(x).reshape(6, 16).detach().numpy(), expected, rtol=1e-5, atol=1e-6)
