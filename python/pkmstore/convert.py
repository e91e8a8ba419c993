"""Trained memory layers' state dicts in the store's tensors (Spec/RETRIEVAL.md, "Tensors").

    converted = pkmstore.convert.from_state_dict("pkm-pytorch", pkm.state_dict(), {"topk": 32})
    converted.write("layer.pkm", dtype="bf16")

Kinds:
- "pkm-pytorch": the `product-key-memory` package's `PKM` (keys [H, n, 2, d], values
  `values.weight` [n², dim]). Config: `topk`; `gate` "softmax" (default) or "relu"
  (`non_competitive_gates`).
- "meta-memory": Meta's product-key memory (`HashingMemory` of facebookresearch/memory, and the
  Memory+ port of UltraMemV2's repository): keys [2·H·n, k_dim/2] viewed as [H, 2, n, k_dim/2],
  values `values.weight` [n², v]. Config: `heads`, `knn`. The query MLP, value projection,
  SiLU projection and gating stay in the model (they are dense); the PEER variant (a second
  value table gating each slot) is refused, and a layer sharing another's values
  (`mem_share_values`) needs `values=` given.

- "ultramem": UltraMem's memory layer (`UltraMemLayerV1` of UltraMemV2's public repository):
  Tucker scoring with its cores (`tucker_core.i` [H, r, r]), its rank-1 buffers
  (`tucker_core_u`/`_v`) as row_proj/col_proj, keys [H, 2, n, d, r] after the key LayerNorm
  (applied here: `keys_norm.weight`/`.bias`, eps from the config, default 1e-5, or the config's
  `key_norm` callable for another norm), `shuffle_index` as the virtual map, the value rows
  weighted per core chunk (MCS), `values_proj.weight` [hidden, E·v] as the projectors, and no
  activation on the selected scores. Config: `knn`. The query projection and query norm stay
  in the model; one query serves every head (`nhead_share_query`), so heads are at most 2.
  `memtool import --layout ultramem` does the same conversion from a safetensors file (k from
  its metadata `knn`). UltraMemV2's layer (a window into a shared pool, which the store now
  has, plus a pre-value gate and a query per Tucker rank, which it does not) is not expressible yet.

A checkpoint saved by model-parallel training (value columns split across ranks, as
ColwiseEmbeddingBag shards them) is given as the list of the ranks' state dicts, in rank order.

Several converted layers go into one store with `write_layers(path, {name: converted})`: layers
whose values are equal share one table; distinct tables are laid end to end in the store's one
value table, each layer reading its own window of it (Spec/FORMAT.md, "Layers").
"""
import os
import tempfile

import numpy as np

from . import import_
from .errors import ArgumentError


def _array(t):
    """A state-dict entry (torch tensor or array) as a float32 numpy array."""
    if hasattr(t, "detach"):
        t = t.detach().to("cpu").float().numpy()
    return np.asarray(t, np.float32)


def _values(state_dicts, key):
    """The value table, its columns concatenated across the ranks' state dicts."""
    parts = [_array(sd[key]) for sd in state_dicts if key in sd]
    if not parts:
        return None
    if len(parts) != len(state_dicts):
        raise ArgumentError(f"'{key}' is in {len(parts)} of the {len(state_dicts)} rank state dicts")
    if len({p.shape[0] for p in parts}) != 1:
        raise ArgumentError(f"the ranks' '{key}' have different row counts {[p.shape for p in parts]}")
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


class Converted:
    """A layer in the store's tensors and import options, ready to `write`."""

    def __init__(self, tensors, options, queries):
        self.tensors, self.options = tensors, options
        #: How the layer's own query projection output becomes the store's [N, H, 2, d].
        self.queries = queries

    def write(self, path, *, dtype="f32", codec="zstd", **options):
        """Imports the layer into a store at `path` (values stored as `dtype`)."""
        with tempfile.TemporaryDirectory() as folder:
            for name, array in self.tensors.items():
                np.save(os.path.join(folder, name + ".npy"), array)
            import_(path, folder, dtype=dtype, codec=codec, **dict(self.options, **options))
        return path


def write_layers(path, layers, *, dtype="f32", codec="zstd", **options):
    """Writes the converted layers `layers` ({name: Converted}, in the order given) into a new
    store at `path`: the distinct value tables (equal ones stored once) end to end as the store's
    value table, each layer reading its window of it. Returns {name: (first row, rows)}."""
    if not layers:
        raise ArgumentError("no layers given")
    tables, windows = [], {}
    for name, converted in layers.items():
        values = converted.tensors["values"]
        start = 0
        for table in tables:
            if table.shape == values.shape and np.array_equal(table, values):
                break
            start += table.shape[0]
        else:
            if tables and values.shape[1] != tables[0].shape[1]:
                raise ArgumentError(f"layer '{name}' has rows of {values.shape[1]} values, the others {tables[0].shape[1]}")
            tables.append(values)
        windows[name] = (start, values.shape[0])
    pool = tables[0] if len(tables) == 1 else np.concatenate(tables)
    for i, (name, converted) in enumerate(layers.items()):
        start, rows = windows[name]
        tensors = dict(converted.tensors, values=pool) if i == 0 else {n: a for n, a in converted.tensors.items() if n != "values"}
        extra = dict(window=rows, pool_offset=start) if len(tables) > 1 or i > 0 else {}
        if i > 0:
            extra["values_from_store"] = True
        with tempfile.TemporaryDirectory() as folder:
            for tensor, array in tensors.items():
                np.save(os.path.join(folder, tensor + ".npy"), array)
            import_(path, folder, dtype=dtype, codec=codec, layer=name, **dict(converted.options, **options, **extra))
    return windows


def from_state_dict(kind, state_dict, config, values=None):
    """The store's tensors of a trained layer (see the module's documentation for the kinds)."""
    dicts = state_dict if isinstance(state_dict, (list, tuple)) else [state_dict]
    if not dicts:
        raise ArgumentError("no state dict given")
    if kind == "pkm-pytorch":
        return _pkm_pytorch(dicts, config, values)
    if kind == "meta-memory":
        return _meta_memory(dicts, config, values)
    if kind == "ultramem":
        return _ultramem(dicts, config, values)
    raise ArgumentError(f"unknown layer kind '{kind}' (pkm-pytorch, meta-memory or ultramem)")


def _require(config, name):
    if name not in config:
        raise ArgumentError(f"config needs '{name}'")
    return int(config[name])


def _pkm_pytorch(dicts, config, values):
    keys = _array(dicts[0]["keys"])
    if keys.ndim != 4 or keys.shape[2] != 2:
        raise ArgumentError(f"keys have shape {keys.shape}, the PKM layer's are [H, n, 2, d]")
    table = values if values is not None else _values(dicts, "values.weight")
    if table is None:
        raise ArgumentError("the state dict has no 'values.weight' (an EmbeddingBag); concat_values_and_combine layers are not supported")
    gate = config.get("gate", "softmax")
    if gate not in ("softmax", "relu"):
        raise ArgumentError(f"gate '{gate}' is not softmax or relu")
    tensors = {"row_keys": np.ascontiguousarray(keys[:, None, :, 0, :]), "col_keys": np.ascontiguousarray(keys[:, None, :, 1, :]),
               "values": _array(table)}
    options = {"scoring": "pkm", "topk": _require(config, "topk"), "activation": gate}
    return Converted(tensors, options, "projection (side, head, element) -> LayerNorm(d) -> permute to (head, side, element)")


def _meta_memory(dicts, config, values):
    if any(k.startswith("values_u") or k.startswith("values_v") for k in dicts[0]):
        raise ArgumentError("the PEER variant gates each slot by a second value table (values_u); the store serves one table")
    heads, knn = _require(config, "heads"), _require(config, "knn")
    keys = _array(dicts[0]["keys"])
    table = values if values is not None else _values(dicts, "values.weight")
    if table is None:
        raise ArgumentError("the state dict has no 'values.weight': a layer sharing another's values (mem_share_values) needs values=")
    table = _array(table)
    n = int(round(table.shape[0] ** 0.5))
    if n * n != table.shape[0]:
        raise ArgumentError(f"the value table has {table.shape[0]} rows, not n² for a whole n")
    if keys.ndim != 2 or keys.shape[0] != 2 * heads * n:
        raise ArgumentError(f"keys have shape {keys.shape}, a {heads}-head layer of {n} keys needs [{2 * heads * n}, k_dim / 2]")
    half = keys.shape[1]
    grid = keys.reshape(heads, 2, n, half)
    tensors = {"row_keys": np.ascontiguousarray(grid[:, 0][:, None]), "col_keys": np.ascontiguousarray(grid[:, 1][:, None]),
               "values": table}
    options = {"scoring": "pkm", "topk": knn, "activation": "softmax"}
    return Converted(tensors, options, "query MLP output [N, H·k_dim] viewed as [N, H, 2, k_dim/2] (first half: rows)")


def _layer_norm(x, weight, bias, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    return y * (1 if weight is None else weight) + (0 if bias is None else bias)


def _ultramem(dicts, config, values):
    sd = dicts[0]
    knn = _require(config, "knn")
    keys = _array(sd["keys"]).astype(np.float64)                         # [H, 2, n, d, r]
    if keys.ndim != 5 or keys.shape[1] != 2:
        raise ArgumentError(f"keys have shape {keys.shape}, UltraMem's are [H, 2, n, d, r]")
    heads, _, n, d, r = keys.shape
    if heads > 2:
        raise ArgumentError(f"{heads} heads: UltraMem's heads share one query two at a time, so a layer has at most 2")
    norm = config.get("key_norm")
    moved = np.moveaxis(keys, -1, -2)                                    # [H, 2, n, r, d]: the norm runs over d
    if norm is None:
        weight = _array(sd["keys_norm.weight"]).astype(np.float64) if "keys_norm.weight" in sd else None
        bias = _array(sd["keys_norm.bias"]).astype(np.float64) if "keys_norm.bias" in sd else None
        normed = _layer_norm(moved, weight, bias, float(config.get("eps", 1e-5)))
    else:
        normed = np.asarray(norm(moved), np.float64)
    grid = np.moveaxis(normed, 3, 2)                                     # [H, 2, r, n, d]
    cores = [k for k in sd if k.startswith("tucker_core.")]
    if not cores:
        raise ArgumentError("the state dict has no tucker_core.i tensors")
    core = np.stack([_array(sd[f"tucker_core.{i}"]) for i in range(len(cores))], axis=1)   # [H, c, r, r]
    table = _array(values if values is not None else sd["values_for_look_up"])
    proj = _array(sd["values_proj.weight"])                              # [hidden, E·v]
    v = table.shape[1]
    if proj.shape[1] % v:
        raise ArgumentError(f"values_proj.weight {proj.shape} does not take E x {v} inputs")
    expansion = proj.shape[1] // v
    shuffle = np.asarray(sd["shuffle_index"].cpu().numpy() if hasattr(sd["shuffle_index"], "cpu") else sd["shuffle_index"], np.int64)
    tensors = {"row_keys": np.ascontiguousarray(grid[:, 0], np.float32), "col_keys": np.ascontiguousarray(grid[:, 1], np.float32),
               "cores": np.ascontiguousarray(core, np.float32), "values": table,
               "projectors": np.ascontiguousarray(proj.T.reshape(expansion, v, proj.shape[0]), np.float32),
               "virtual_map": shuffle,
               "row_proj": np.ascontiguousarray(_array(sd["tucker_core_u"]).reshape(heads, r)),
               "col_proj": np.ascontiguousarray(_array(sd["tucker_core_v"]).reshape(heads, r))}
    options = {"scoring": "tucker", "topk": knn, "top_m": knn, "activation": "none", "addressing": "table"}
    return Converted(tensors, options, "query_proj output [N, 2·d] -> query norm over d -> the same [2, d] for every head")
