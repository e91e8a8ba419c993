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
  SiLU projection and gating stay in the model (they are dense), and a layer sharing another's
  values (`mem_share_values`) needs `values=` given. The PEER variant (`values_u.weight` and
  `values_v.weight`: each slot's softmax weight times gelu(x · values_u[slot]), summed over
  values_v) becomes a gated layer (Spec/RETRIEVAL.md, "Gates"): values_v as the values,
  values_u as the gates, GELU, the layer's input x as the gate input.

- "ultramem": UltraMem's memory layer (`UltraMemLayerV1` of UltraMemV2's public repository):
  Tucker scoring with its cores (`tucker_core.i` [H, r, r]), its rank-1 buffers
  (`tucker_core_u`/`_v`) as row_proj/col_proj, keys [H, 2, n, d, r] after the key LayerNorm
  (applied here: `keys_norm.weight`/`.bias`, eps from the config, default 1e-5, or the config's
  `key_norm` callable for another norm), `shuffle_index` as the virtual map, the value rows
  weighted per core chunk (MCS), `values_proj.weight` [hidden, E·v] as the projectors, and no
  activation on the selected scores. Config: `knn`. The query projection and query norm stay
  in the model; one query serves every head (`nhead_share_query`), so heads are at most 2.
  `memtool import --layout ultramem` does the same conversion from a safetensors file (k from
  its metadata `knn`).
- "ultramem-v2": UltraMemV2's memory layer (`UltraMemLayerV2`): the key layer's state dict (as
  "ultramem": keys and their LayerNorm, `tucker_core.i`, `tucker_core_u`/`_v`, `shuffle_index`,
  `values_proj.weight`) with `values=` the value layer's (`has_value=True`) state dict, or the
  list of its ranks' state dicts under vertical parallelism: `values_for_look_up` [all_value_num,
  vdim] (a pool shared by the model's memory layers, of which this layer reads the window of
  value_num rows from its offset) and `pre_values_for_look_up` [all_value_num, pre_vdim] (the
  pre-value gate, stored as the table rows' last columns: Spec/RETRIEVAL.md, "Gates"). Config:
  `knn`, `key_expand_time` (`mem_key_expand_time`), the window's `offset` (or `layer_id` and
  `mem_layer_num`, as the layer computes it), `use_glu_act` (`mem_use_glu_act`: GELU on the
  gate), and optionally `eps`/`key_norm` as for "ultramem". The query projection, query norm and
  `pre_values_proj` (the gate input) stay in the model. Its reference forward (the CUDA/CPU
  path) runs with `mem_q_for_each_tucker_rank` and tucker rank 2 only: the normalised query
  [N, 2, 2, d] gives head h the row query q[:, h // 2, 0] and the column query q[:, h // 2, 1]
  (the NPU path's einsum uses q[:, 0, 0] and q[:, 1, 0] instead: not the same layer).
  `value_expand_time` 1 (groups summed before values_proj) becomes E equal projectors. Ranks'
  value columns are chunked per rank for the cores (each rank weights its own columns in c
  chunks); the conversion reorders the columns, and the projectors' rows alike, so that the
  store's c chunks are the same columns.

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
    store at `path`: the distinct value tables (equal ones stored once; a gated layer's rows with
    its gate columns) end to end as the store's value table, each layer reading its window of it
    (its own window within its table, for layers that have one, as UltraMemV2's). Returns
    {name: (first row, rows)} of each layer's table in the store."""
    if not layers:
        raise ArgumentError("no layers given")

    def rows_of(converted):
        t = converted.tensors
        return t["values"] if "gates" not in t else np.concatenate([t["values"], t["gates"]], axis=1)

    tables, windows = [], {}
    for name, converted in layers.items():
        rows = rows_of(converted)
        start = 0
        for table in tables:
            if table.shape == rows.shape and np.array_equal(table, rows):
                break
            start += table.shape[0]
        else:
            if tables and rows.shape[1] != tables[0].shape[1]:
                raise ArgumentError(f"layer '{name}' has table rows of {rows.shape[1]} elements (values and gates), the others {tables[0].shape[1]}")
            tables.append(rows)
        windows[name] = (start, rows.shape[0])
    pool = tables[0] if len(tables) == 1 else np.concatenate(tables)
    total = pool.shape[0]
    for i, (name, converted) in enumerate(layers.items()):
        start, rows = windows[name]
        own = converted.options
        gate_dim = converted.tensors["gates"].shape[1] if "gates" in converted.tensors else 0
        v = pool.shape[1] - gate_dim
        if i == 0:
            tensors = dict(converted.tensors, values=np.ascontiguousarray(pool[:, :v]))
            if gate_dim:
                tensors["gates"] = np.ascontiguousarray(pool[:, v:])
        else:
            tensors = {n: a for n, a in converted.tensors.items() if n not in ("values", "gates")}
        extra = {}
        if len(tables) > 1 or i > 0 or "window" in own:
            extra = dict(window=own.get("window", rows), pool_offset=(start + own.get("pool_offset", 0)) % total)
        if i > 0:
            extra["values_from_store"] = True
            if gate_dim:
                extra["gate_dim"] = gate_dim
        with tempfile.TemporaryDirectory() as folder:
            for tensor, array in tensors.items():
                np.save(os.path.join(folder, tensor + ".npy"), array)
            import_(path, folder, dtype=dtype, codec=codec, layer=name, **dict(own, **options, **extra))
    return windows


def from_state_dict(kind, state_dict, config, values=None):
    """The store's tensors of a trained layer (see the module's documentation for the kinds)."""
    if kind == "ultramem-v2":
        return _ultramem_v2(state_dict, config, values)
    dicts = state_dict if isinstance(state_dict, (list, tuple)) else [state_dict]
    if not dicts:
        raise ArgumentError("no state dict given")
    if kind == "pkm-pytorch":
        return _pkm_pytorch(dicts, config, values)
    if kind == "meta-memory":
        return _meta_memory(dicts, config, values)
    if kind == "ultramem":
        return _ultramem(dicts, config, values)
    raise ArgumentError(f"unknown layer kind '{kind}' (pkm-pytorch, meta-memory, ultramem or ultramem-v2)")


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
    heads, knn = _require(config, "heads"), _require(config, "knn")
    keys = _array(dicts[0]["keys"])
    peer = "values_u.weight" in dicts[0] or "values_v.weight" in dicts[0]
    table = values if values is not None else _values(dicts, "values_v.weight" if peer else "values.weight")
    gates = _values(dicts, "values_u.weight") if peer else None
    if peer and (table is None or gates is None):
        raise ArgumentError("a PEER layer needs both values_u.weight and values_v.weight")
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
    if peer:
        if gates.shape[0] != table.shape[0]:
            raise ArgumentError(f"values_u {gates.shape} and values_v {table.shape} have different row counts")
        tensors["gates"] = gates
        options["gate_activation"] = "gelu"
    return Converted(tensors, options, "query MLP output [N, H·k_dim] viewed as [N, H, 2, k_dim/2] (first half: rows)")


def _layer_norm(x, weight, bias, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    return y * (1 if weight is None else weight) + (0 if bias is None else bias)


def _ultramem(dicts, config, values):
    sd = dicts[0]
    keys = _array(sd["keys"])
    if keys.ndim == 5 and keys.shape[0] > 2:
        raise ArgumentError(f"{keys.shape[0]} heads: UltraMem's heads share one query two at a time, so a layer has at most 2")
    tensors, heads = _tucker_keys(sd, config)
    table = _array(values if values is not None else sd["values_for_look_up"])
    proj = _array(sd["values_proj.weight"])                              # [hidden, E·v]
    v = table.shape[1]
    if proj.shape[1] % v:
        raise ArgumentError(f"values_proj.weight {proj.shape} does not take E x {v} inputs")
    expansion = proj.shape[1] // v
    tensors.update(values=table, projectors=np.ascontiguousarray(proj.T.reshape(expansion, v, proj.shape[0]), np.float32))
    options = {"scoring": "tucker", "topk": _require(config, "knn"), "top_m": _require(config, "knn"), "activation": "none",
               "addressing": "table"}
    return Converted(tensors, options, "query_proj output [N, 2·d] -> query norm over d -> the same [2, d] for every head")


def _ultramem_v2(state_dict, config, values):
    sd = state_dict[0] if isinstance(state_dict, (list, tuple)) else state_dict
    ranks = values if isinstance(values, (list, tuple)) else [values]
    if values is None or not all(hasattr(r, "keys") for r in ranks):
        raise ArgumentError("values= must be the value layer's state dict (has_value=True), or the list of its ranks' state dicts")
    keys = _array(sd["keys"])
    if keys.ndim != 5 or keys.shape[-1] != 2:
        raise ArgumentError(f"keys have shape {keys.shape}: UltraMemV2's reference forward runs with tucker rank 2 "
                            "(and mem_q_for_each_tucker_rank), keys [H, 2, n, d, 2]")
    tensors, heads = _tucker_keys(sd, config)
    tables = [_array(r["values_for_look_up"]) for r in ranks]
    gates = _values(ranks, "pre_values_for_look_up")
    if len({t.shape[0] for t in tables}) != 1:
        raise ArgumentError(f"the ranks' values_for_look_up have different row counts {[t.shape for t in tables]}")
    pool, v = tables[0].shape[0], sum(t.shape[1] for t in tables)
    cores = tensors["cores"].shape[1]
    # Column order: chunk t of every rank's columns, rank by rank, for t < c: the store's chunk t.
    order = np.concatenate([start + np.arange(t * (w // cores), (t + 1) * (w // cores))
                            for t in range(cores) for start, w in zip(np.cumsum([0] + [x.shape[1] for x in tables[:-1]]),
                                                                      [x.shape[1] for x in tables])])
    if any(x.shape[1] % cores for x in tables):
        raise ArgumentError(f"the ranks' value columns {[x.shape[1] for x in tables]} do not split into {cores} core chunks")
    table = np.ascontiguousarray(np.concatenate(tables, axis=1)[:, order])
    proj = _array(sd["values_proj.weight"])                              # [hidden, value_expand_time · v]
    if proj.shape[1] % v:
        raise ArgumentError(f"values_proj.weight {proj.shape} does not take value_expand_time x {v} inputs")
    key_expand = _require(config, "key_expand_time")
    expansion = key_expand * key_expand
    n_virtual = len(tensors["virtual_map"])
    if n_virtual % expansion:
        raise ArgumentError(f"shuffle_index has {n_virtual} slots, not a multiple of key_expand_time² = {expansion}")
    window = n_virtual // expansion
    per_group = proj.T.reshape(-1, v, proj.shape[0])                      # [value_expand_time, v, hidden]
    if per_group.shape[0] not in (1, expansion):
        raise ArgumentError(f"values_proj.weight takes {per_group.shape[0]} groups of {v}; UltraMemV2 has 1 or key_expand_time² = {expansion}")
    projectors = np.broadcast_to(per_group[:, order], (expansion, v, proj.shape[0]))
    if "offset" in config:
        offset = int(config["offset"])
    else:
        offset = _require(config, "layer_id") * (pool // _require(config, "mem_layer_num"))
    tensors.update(values=table, projectors=np.ascontiguousarray(projectors, np.float32))
    options = {"scoring": "tucker", "topk": _require(config, "knn"), "top_m": _require(config, "knn"), "activation": "none",
               "addressing": "table", "window": window, "pool_offset": offset % pool}
    if gates is not None:
        tensors["gates"] = gates
        options["gate_activation"] = "gelu" if config.get("use_glu_act") else "none"
    return Converted(tensors, options, "query_proj output [N, 2·2·d] -> query norm over d -> [N, 2, 2, d]; "
                                       "head h: row query q[:, h // 2, 0], column query q[:, h // 2, 1]; gate input pre_values_proj(x)")


def _tucker_keys(sd, config):
    """UltraMem's keys (after the key LayerNorm), cores, rank-1 buffers and shuffle as the store's tensors."""
    keys = _array(sd["keys"]).astype(np.float64)                         # [H, 2, n, d, r]
    if keys.ndim != 5 or keys.shape[1] != 2:
        raise ArgumentError(f"keys have shape {keys.shape}, UltraMem's are [H, 2, n, d, r]")
    heads, _, n, d, r = keys.shape
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
    shuffle = np.asarray(sd["shuffle_index"].cpu().numpy() if hasattr(sd["shuffle_index"], "cpu") else sd["shuffle_index"], np.int64)
    tensors = {"row_keys": np.ascontiguousarray(grid[:, 0], np.float32), "col_keys": np.ascontiguousarray(grid[:, 1], np.float32),
               "cores": np.ascontiguousarray(core, np.float32), "virtual_map": shuffle,
               "row_proj": np.ascontiguousarray(_array(sd["tucker_core_u"]).reshape(heads, r)),
               "col_proj": np.ascontiguousarray(_array(sd["tucker_core_v"]).reshape(heads, r))}
    return tensors, heads
