"""A memory layer served from a store: search and lookup on batches of queries."""
import ctypes
import json
import os

import numpy as np

from . import _native
from ._native import lib
from .arrays import as_array, output, pointer
from .errors import ArgumentError
from .store import Closable, Handle, call, read_text


class _LayerHandle(Handle):
    _close = lib.pkm_layer_close
    kind = "layer"


def gate_inputs(gate_input, batch, gate_dim):
    """`gate_input` checked for a layer gated by `gate_dim` columns (0: none) and a batch of
    `batch` queries: float32 [batch, gate_dim] read in place, or None for an ungated layer."""
    if gate_dim == 0:
        if gate_input is not None:
            raise ArgumentError("the layer has no gate (gate_dim 0), yet gate_input was given")
        return None
    if gate_input is None:
        raise ArgumentError(f"the layer is gated by {gate_dim} columns: lookup needs gate_input [B, {gate_dim}]")
    u = as_array(gate_input, np.float32, "gate_input", ndim=2)
    if tuple(u.shape) != (batch, gate_dim):
        raise ArgumentError(f"gate_input has shape {tuple(u.shape)}, the layer needs [{batch}, {gate_dim}] (one vector per query)")
    return u


class MemoryLayer(Closable):
    """A memory layer a store holds (`pkmstore.MemoryLayer(path)`, or `MemoryLayer(path,
    layer="block3")` when the store holds several reading one value table). Thread-safe: calls
    from several threads run at once (the GIL is released during them).

    Queries are float32 [B, H, 2, d] taken after the layer's query normalisation: for each query
    and head, the row half then the column half (Spec/RETRIEVAL.md, "Queries"). Numpy arrays and
    CPU torch tensors are read in place; results are new arrays, or the `out=` arrays given.
    `resident=True` loads the value table into memory at open (see `pkmstore.open`)."""

    def __init__(self, path, layer=None, threads=0, cache_bytes=256 << 20, resident=False, *, _store=None):
        handle = ctypes.c_uint64(0)
        name = None if layer is None else layer.encode("utf-8")
        if resident and _store is None:  # a resident table belongs to a store: open one for the layer
            from .store import Store
            with Store(path, cache_bytes, resident=True) as store:
                call(lib.pkm_store_layer_open, store._handle.value, name, threads, ctypes.byref(handle))
        elif _store is None:
            call(lib.pkm_layer_open_named, os.fsencode(path), name, threads, cache_bytes, ctypes.byref(handle))
        else:  # Store.layer: the store's shard cache, shared with its other layers
            call(lib.pkm_store_layer_open, _store, name, threads, ctypes.byref(handle))
        self.path = path
        self._opened_with = (path, layer, threads, cache_bytes, resident)
        self._handle = _LayerHandle(handle.value)
        info = _native.pkm_layer_info()
        call(lib.pkm_layer_describe, self._handle.value, ctypes.byref(info))
        self.heads, self.key_dim, self.top_k, self.cores = info.heads, info.key_dim, info.top_k, info.cores
        self.output_dim, self.value_dim, self.expansion = info.output_dim, info.value_dim, info.expansion
        self.physical_rows, self.virtual_slots = info.physical_rows, info.virtual_slots
        self.config = json.loads(read_text(lib.pkm_layer_config_json, self._handle.value))
        #: Columns of each table row forming the slot's gate vector (0: the layer has no gate;
        #: Spec/RETRIEVAL.md, "Gates"), and the gate's activation.
        self.gate_dim = int(self.config.get("gateDim", 0))
        self.gate_activation = self.config.get("gateActivation", "none")

    def __reduce__(self):
        """Pickles as the path and options it was opened with: unpickled (in a spawned worker,
        say), it opens the layer again there, with a cache of its own."""
        self._handle.value  # raises ClosedError for a closed layer
        return (type(self), self._opened_with)

    def _queries(self, q):
        q = as_array(q, np.float32, "queries", ndim=4)
        expected = (self.heads, 2, self.key_dim)
        if tuple(q.shape[1:]) != expected or q.shape[0] < 1:
            raise ArgumentError(f"queries have shape {tuple(q.shape)}, the layer needs [B, {self.heads}, 2, {self.key_dim}] "
                                "(B >= 1; head, then row and column halves, after the query normalisation)")
        return q

    def search(self, queries, indices=None, weights=None):
        """Selected slots: indices int64 [B, H, k] (virtual slot ids, best first) and weights
        float32 [B, H, k, c]."""
        q = self._queries(queries)
        b = q.shape[0]
        idx = output((b, self.heads, self.top_k), np.int64, indices, "indices")
        w = output((b, self.heads, self.top_k, self.cores), np.float32, weights, "weights")
        call(lib.pkm_layer_search, self._handle.value, pointer(q), b, pointer(idx), pointer(w))
        return idx, w

    def lookup(self, queries, out=None, indices=None, weights=None, gate_input=None):
        """The layer's output float32 [B, d_out] with the slots and weights of `search` (the
        weights before any gate). A gated layer (`gate_dim` > 0) needs `gate_input` float32
        [B, gate_dim], one vector per query: each slot's weight is then scaled by
        act(gate_input[b] · gate row), act the layer's `gate_activation`."""
        q = self._queries(queries)
        b = q.shape[0]
        result = output((b, self.output_dim), np.float32, out, "out")
        idx = output((b, self.heads, self.top_k), np.int64, indices, "indices")
        w = output((b, self.heads, self.top_k, self.cores), np.float32, weights, "weights")
        u = gate_inputs(gate_input, b, self.gate_dim)
        if u is None:
            call(lib.pkm_layer_lookup, self._handle.value, pointer(q), b, pointer(result), pointer(idx), pointer(w))
            return result, idx, w
        call(lib.pkm_layer_lookup_gated, self._handle.value, pointer(q), b, pointer(u), pointer(result), pointer(idx), pointer(w))
        return result, idx, w

    def address(self, slots):
        """The value table row and the projector of each virtual slot: two int64 arrays shaped
        like `slots` (int64, any shape). With `project`, the lookup's reduce in steps, for rows
        summed elsewhere (Spec/DISTRIBUTED.md)."""
        s = as_array(slots, np.int64, "slots")
        rows, projectors = np.empty(s.shape, np.int64), np.empty(s.shape, np.int64)
        call(lib.pkm_layer_address, self._handle.value, pointer(s), s.size, pointer(rows), pointer(projectors))
        return rows, projectors

    def project(self, sums, out=None):
        """The output float32 [B, d_out] from `sums` float32 [B, E, v]: per query and projector,
        the weighted sum of the query's selected rows that `address` gives that projector (as
        `Store.gather_reduce` with targets query * E + projector computes them)."""
        a = as_array(sums, np.float32, "sums", ndim=3)
        if tuple(a.shape[1:]) != (self.expansion, self.value_dim) or a.shape[0] < 1:
            raise ArgumentError(f"sums have shape {tuple(a.shape)}, the layer needs [B, {self.expansion}, {self.value_dim}]")
        result = output((a.shape[0], self.output_dim), np.float32, out, "out")
        call(lib.pkm_layer_project, self._handle.value, pointer(a), a.shape[0], pointer(result))
        return result

    def __repr__(self):
        return (f"pkmstore.MemoryLayer('{self.path}', {self.config['scoring']}, H={self.heads} d={self.key_dim} "
                f"k={self.top_k}, {self.virtual_slots} slots, d_out={self.output_dim})")
