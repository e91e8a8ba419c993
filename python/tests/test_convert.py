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
    with pytest.raises(pkmstore.ArgumentError, match="PEER"):
        pkmstore.convert.from_state_dict("meta-memory", {"keys": keys, "values_u.weight": keys, "values_v.weight": keys},
                                         {"heads": 2, "knn": 4})
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
