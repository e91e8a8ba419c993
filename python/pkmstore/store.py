"""A store opened read-only: its layout, rows, tensors and the fused lookup-reduce."""
import ctypes
import json
import os
import threading

import numpy as np

from . import _native
from ._native import lib
from .arrays import as_array, output, pointer
from .errors import ArgumentError, ClosedError, check


class Handle:
    """A C API handle, closed once (explicitly, by `with`, or when collected)."""

    _close = None
    kind = "handle"

    def __init__(self, value):
        self._value = value
        self._lock = threading.Lock()

    @property
    def value(self):
        if self._value is None:
            raise ClosedError(f"the {self.kind} is closed")
        return self._value

    def close(self):
        with self._lock:
            value, self._value = self._value, None
        if value is not None:
            error = _native.pkm_error()
            check(type(self)._close(value, ctypes.byref(error)), error)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Closable:
    """What owns a handle: `close()` and use as a context manager."""

    _handle = None

    def close(self):
        """Closes it; later calls raise ClosedError."""
        self._handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _StoreHandle(Handle):
    _close = lib.pkm_store_close
    kind = "store"


def call(function, *args):
    """Calls a C API function, raising its error."""
    error = _native.pkm_error()
    check(function(*args, ctypes.byref(error)), error)


def read_text(function, *args):
    """A text result of the C API (tensor names, JSON), sized by a first call."""
    needed = ctypes.c_size_t(0)
    error = _native.pkm_error()
    status = function(*args, None, 0, ctypes.byref(needed), ctypes.byref(error))
    if status not in (_native.OK, _native.BUFFER):
        check(status, error)
    buffer = ctypes.create_string_buffer(needed.value)
    call(function, *args, buffer, needed.value, None)
    return buffer.value.decode("utf-8")


class Layout:
    """The value table's shape and encoding."""

    def __init__(self, c):
        self.rows, self.dim = c.rows, c.dim
        self.rows_per_shard, self.shard_count, self.rows_committed = c.rows_per_shard, c.shard_count, c.rows_committed
        self.dtype = _native.TYPE_NAMES[c.element_type]
        self.codec = {0: "raw", 1: "zstd", 2: "nibble"}.get(c.codec, str(c.codec))
        self.format_version = c.format_version
        self.complete = bool(c.complete)

    def __repr__(self):
        return (f"Layout(rows={self.rows}, dim={self.dim}, dtype='{self.dtype}', codec='{self.codec}', "
                f"rows_per_shard={self.rows_per_shard}, format_version={self.format_version}, complete={self.complete})")


class Store(Closable):
    """A store opened read-only (`pkmstore.open`). Thread-safe; use as a context manager or
    call `close()`; arrays it returns are owned by the caller."""

    def __init__(self, path, cache_bytes=256 << 20, resident=False, background_check=True):
        handle = ctypes.c_uint64(0)
        flags = (1 if resident else 0) | (0 if background_check else 2)  # PKM_OPEN_RESIDENT, PKM_OPEN_NO_BACKGROUND_CHECK
        call(lib.pkm_store_open_with, os.fsencode(path), cache_bytes, flags, ctypes.byref(handle))
        self.path = path
        self._opened_with = (path, cache_bytes, resident, background_check)
        self._handle = _StoreHandle(handle.value)
        layout = _native.pkm_layout()
        call(lib.pkm_store_layout, self._handle.value, ctypes.byref(layout))
        self.layout = Layout(layout)

    def __reduce__(self):
        """Pickles as the path and options it was opened with: unpickled (in a spawned worker,
        say), it opens the store again there. Handles are numbers of this process only."""
        self._handle.value  # raises ClosedError for a closed store
        return (type(self), self._opened_with)

    def wait_checked(self, timeout=60.0):
        """Waits up to `timeout` seconds for the background check (started by the first read) to
        finish its pass; returns whether every row of the table has been checked since open, so
        that reads check nothing more: for a server that reads its table once and waits before
        taking traffic. Always True for a resident store, never for a zstd one."""
        checked = ctypes.c_int32(0)
        call(lib.pkm_store_wait_checked, self._handle.value, float(timeout), ctypes.byref(checked))
        return bool(checked.value)

    def rows(self, indices, out=None):
        """Rows `indices` (int64 [n]) as float32 [n, dim], into `out` when given."""
        idx = as_array(indices, np.int64, "indices", ndim=1)
        result = output((idx.shape[0], self.layout.dim), np.float32, out, "out")
        call(lib.pkm_store_rows, self._handle.value, pointer(idx), idx.shape[0], pointer(result))
        return result

    def gather_reduce(self, indices, weights, chunks=1, targets=None, outputs=1, out=None):
        """Σ weights x rows (Spec/RETRIEVAL.md): indices int64 [n], weights float32 [n, chunks]
        (or [n] for chunks 1), targets int64 [n] choosing the output row of each (all 0 when
        None); returns float32 [outputs, dim], added into `out` when given (zeros otherwise)."""
        idx = as_array(indices, np.int64, "indices", ndim=1)
        w = as_array(weights, np.float32, "weights")
        if w.size != idx.shape[0] * chunks:
            raise ArgumentError(f"weights hold {w.size} values, {idx.shape[0]} rows x {chunks} chunks need {idx.shape[0] * chunks}")
        t = None if targets is None else as_array(targets, np.int64, "targets", ndim=1)
        result = np.zeros((outputs, self.layout.dim), np.float32) if out is None else output((outputs, self.layout.dim), np.float32, out, "out")
        call(lib.pkm_store_gather_reduce, self._handle.value, pointer(idx), pointer(w), idx.shape[0], chunks,
             None if t is None else pointer(t), outputs, pointer(result))
        return result

    def gate_scores(self, indices, column, inputs, queries, activation="none"):
        """The gates of a gated layer's slots (Spec/RETRIEVAL.md, "Gates"): float32 [n],
        act(inputs[queries[i]] · row(indices[i])[column : column + g]) with inputs float32 [B, g],
        queries int64 [n] choosing each slot's gate input, act "none" or "gelu"."""
        idx = as_array(indices, np.int64, "indices", ndim=1)
        u = as_array(inputs, np.float32, "inputs", ndim=2)
        q = as_array(queries, np.int64, "queries", ndim=1)
        if q.shape[0] != idx.shape[0]:
            raise ArgumentError(f"{q.shape[0]} queries for {idx.shape[0]} rows")
        result = np.empty(idx.shape[0], np.float32)
        call(lib.pkm_store_gate_scores, self._handle.value, pointer(idx), idx.shape[0], int(column), u.shape[1], pointer(u), u.size,
             pointer(q), activation.encode(), pointer(result))
        return result

    def layers(self):
        """Names of the store's memory layers (all reading its one value table), in name order."""
        return [n for n in read_text(lib.pkm_store_layer_names, self._handle.value).split("\n") if n]

    def layer(self, name=None, threads=0):
        """Layer `name` (None: the only one) as a `pkmstore.MemoryLayer` that shares this store's
        decoded-shard cache with its other layers: how to serve the layers of a model's blocks."""
        from .layer import MemoryLayer
        return MemoryLayer(self.path, layer=name, threads=threads, _store=self._handle.value)

    def part(self):
        """The part record (a dict, Spec/FORMAT.md "Parts") when the store holds a piece of a
        split value table (`pkmstore.distributed`), None otherwise."""
        text = read_text(lib.pkm_store_part_json, self._handle.value)
        return json.loads(text) if text else None

    def tensor_names(self):
        """Names of the store's tensors, in key order."""
        return [n for n in read_text(lib.pkm_store_tensor_names, self._handle.value).split("\n") if n]

    def tensor(self, name):
        """Tensor `name` as a numpy array of its stored type (bf16 as uint16 bit patterns)."""
        element, rank, shape, size = ctypes.c_int32(), ctypes.c_int32(), (ctypes.c_int64 * 8)(), ctypes.c_size_t()
        key = name.encode("utf-8")
        call(lib.pkm_store_tensor_info, self._handle.value, key, ctypes.byref(element), ctypes.byref(rank), shape, ctypes.byref(size))
        result = np.empty([shape[i] for i in range(rank.value)], _native.NUMPY_DTYPES[element.value])
        call(lib.pkm_store_tensor_read, self._handle.value, key, pointer(result), size.value)
        return result

    def verify(self):
        """Checks every shard, tensor and record; the list of problems found (empty when sound)."""
        problems = ctypes.c_int64(0)
        report = ctypes.create_string_buffer(64 << 10)
        call(lib.pkm_store_verify, self._handle.value, ctypes.byref(problems), report, len(report))
        return [line for line in report.value.decode("utf-8", "replace").split("\n") if line][:problems.value]

    def __repr__(self):
        return f"pkmstore.Store('{self.path}', {self.layout})"
