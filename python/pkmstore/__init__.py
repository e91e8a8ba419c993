"""pkmstore: product-key memory stores from Python.

    import pkmstore
    store = pkmstore.open("memory.pkm")            # rows, tensors, gather_reduce, verify
    layer = pkmstore.MemoryLayer("memory.pkm")     # or MemoryLayer(path, layer="block3"): store.layers()
    out, idx, w = layer.lookup(q)                 # q float32 [B, H, 2, d], numpy or CPU torch
    pkmstore.import_("memory.pkm", "layer.safetensors", topk=32)
    pkmstore.export("memory.pkm", "roundtrip.safetensors")

Converters for trained PyTorch layers are in pkmstore.convert (and pkmstore.torch serves one as a
torch module). Everything goes through the C API of libpkmstore (include/pkmstore.h).
"""
import json
import os

from ._native import lib
from .errors import (ArgumentError, ClosedError, CorruptStoreError, IncompleteStoreError, InputFileError,
                     NotFoundError, PKMStoreError, StorageError, UnsupportedError)
from .layer import MemoryLayer
from .store import Layout, Store, call

__all__ = ["open", "Store", "Layout", "MemoryLayer", "import_", "export", "version", "PKMStoreError", "ArgumentError",
           "ClosedError", "NotFoundError", "CorruptStoreError", "IncompleteStoreError", "UnsupportedError",
           "StorageError", "InputFileError"]


def open(path, cache_bytes=256 << 20, resident=False, background_check=True):  # noqa: A001 - mirrors the built-in for files
    """Opens the store at `path` read-only. With `resident`, the whole value table is decoded and
    checked at open into memory in huge pages (as much memory as its raw rows) and every read is
    served from there: for tables that fit in memory, the fastest reads whatever the codec.
    Otherwise, after the first read a thread of idle priority checks the table's rows that are in
    memory, once, so that reads stop testing whether each row was checked, and then copies the slots
    of a nibble table that fit `cache_bytes` into memory, where reduces find them from then on (the
    sums keep their bits); `background_check=False` leaves every check to the reads and copies
    nothing (for a process that reads little of the table, or many worker processes that each open
    the table, each of which would check it and hold its own copy; workers forked after the copy
    share the parent's)."""
    return Store(path, cache_bytes, resident, background_check)


def version():
    """The library's version string."""
    return lib.pkm_version().decode()


def import_(store, source, *, rename=None, scoring=None, topk=None, top_m=None, activation=None, addressing=None,
            address_key=None, dtype=None, codec=None, level=None, rows_per_shard=None, dictionary=None, threads=None,
            layout=None, layer=None, values_from_store=None, window=None, pool_offset=None, gate_dim=None,
            gate_activation=None):
    """Imports the trained layer at `source` (.safetensors, or a directory of .npy files, with the
    tensor names of Spec/RETRIEVAL.md) into the store at `store`, as `memtool import` does:
    creating it, resuming an interrupted import, or doing nothing when it is complete. `rename`
    maps canonical names to the file's ({"values": "model.mem.values"}); None keeps the file's
    metadata or the default for each option. `layout` ("pkm-pytorch", "meta-memory") reads a
    layer saved under its own names and shapes, as `memtool import --layout` does. `layer` names
    the layer in the store; naming one that a complete store lacks adds it, reading the store's
    value table (the checkpoint's values must equal the rows it reads unless `values_from_store`;
    `window` and `pool_offset` choose those rows), as `memtool import --layer` does. A `gates`
    tensor [N, g] beside the values makes a gated layer (Spec/RETRIEVAL.md, "Gates"), with
    `gate_activation` "none" or "gelu"; a gated layer added to a store reads its gates from the
    store's rows (`values_from_store=True, gate_dim=g`)."""
    options = {k: v for k, v in dict(rename=rename, scoring=scoring, topk=topk, top_m=top_m, activation=activation,
                                     addressing=addressing, address_key=address_key, dtype=dtype, codec=codec, level=level,
                                     rows_per_shard=rows_per_shard, dictionary=dictionary, threads=threads,
                                     layout=layout, layer=layer, values_from_store=values_from_store, window=window,
                                     pool_offset=pool_offset, gate_dim=gate_dim, gate_activation=gate_activation).items()
               if v is not None}
    call(lib.pkm_import, os.fsencode(store), os.fsencode(source), json.dumps(options).encode())


def export(store, destination, layer=None):
    """Writes the store's layer (`layer`, or its only one) to a safetensors file as a
    single-layer checkpoint, as `memtool export` does: whole or not at all, never over a store
    (ArgumentError); a full disk raises StorageError."""
    call(lib.pkm_export_layer, os.fsencode(store), None if layer is None else layer.encode("utf-8"), os.fsencode(destination))
