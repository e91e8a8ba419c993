"""A memory layer whose value table is split into parts, each served by a Ray actor
(Spec/DISTRIBUTED.md).

    pkmstore.distributed.split("memory.pkm", "memory.split", parts=4)      # or memtool split
    layer = pkmstore.distributed.MemoryLayer("memory.split")              # joins Ray, or starts it
    out, idx, w = layer.lookup(q)                                         # as pkmstore.MemoryLayer

The caller searches (every part holds the keys) and sends each part the selected rows it owns;
each part's actor returns partial sums, E x v floats per query, never rows; the caller adds them
in part order and applies the projectors. Ray restarts a killed actor and retries its call
(`max_restarts`, `max_task_retries`); a part that still fails raises PartError naming it.
"""
import json
import os
import threading

import numpy as np

from ._native import lib
from .errors import ArgumentError, PKMStoreError
from .layer import MemoryLayer as _LocalLayer, gate_inputs
from .store import Store, call

__all__ = ["split", "read_manifest", "MemoryLayer", "PartServer", "PartError", "SplitError"]

MANIFEST = "split.json"


class SplitError(PKMStoreError):
    """A split directory, or one of its parts, is not what its manifest says; the message names it."""


class PartError(PKMStoreError):
    """A part's actor failed (and Ray's restarts and retries did not help); the message names the part."""


def split(store, directory, parts, by="rows"):
    """Cuts the store at `store` into `parts` part stores by "rows" or "dims" in the new
    `directory`, as `memtool split` does; returns its manifest (`read_manifest`)."""
    if by not in ("rows", "dims"):
        raise ArgumentError(f"by must be 'rows' or 'dims', got {by!r}")
    call(lib.pkm_split, os.fsencode(store), os.fsencode(directory), int(parts), by.encode())
    return read_manifest(directory)


def read_manifest(directory):
    """The split's `split.json` as a dict, checked: its format, and that its parts tile the
    table (one after the other from 0, no gap or overlap)."""
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path, "rb") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise SplitError(f"'{directory}' is not a split: it has no {MANIFEST} (write one with memtool split)") from None
    except (OSError, ValueError) as e:
        raise SplitError(f"'{path}' cannot be read as a split manifest: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "pkm-split":
        raise SplitError(f"'{path}' is not a split manifest (format {manifest.get('format') if isinstance(manifest, dict) else None!r})")
    if manifest.get("version") != 1:
        raise SplitError(f"'{path}' is split manifest version {manifest.get('version')!r}; this pkmstore reads version 1")
    try:
        axis, parts = manifest["axis"], manifest["parts"]
        extent = manifest["tableRows"] if axis == "rows" else manifest["tableDim"]
        nxt = 0
        for k, entry in enumerate(parts):
            file, first, count = entry["file"], int(entry["first"]), int(entry["count"])
            if not file or "/" in file or file in (".", ".."):
                raise SplitError(f"'{path}': part {k}'s file {file!r} is not a file name inside the split")
            if first != nxt:
                what = "overlaps the part before it" if first < nxt else f"leaves {axis} {nxt}..{first - 1} in no part"
                raise SplitError(f"'{path}': part {k} ({file}, {axis} {first}..{first + count - 1}) {what}")
            if count < 1:
                raise SplitError(f"'{path}': part {k} ({file}) holds no {axis}")
            nxt = first + count
        if nxt != extent or not parts:
            raise SplitError(f"'{path}': the parts end at {nxt}, the table has {extent} {axis}")
    except (KeyError, TypeError, ValueError) as e:
        raise SplitError(f"'{path}' is not a valid split manifest: {e!r}") from None
    return manifest


def _expected_record(manifest, k):
    """The part record part `k` must carry (Spec/FORMAT.md, "Parts")."""
    entry = manifest["parts"][k]
    return {"split": manifest["split"], "index": k, "parts": len(manifest["parts"]), "axis": manifest["axis"],
            "tableRows": manifest["tableRows"], "tableDim": manifest["tableDim"], "first": entry["first"],
            "count": entry["count"], "layersDigest": manifest["layersDigest"]}


class PartServer:
    """Serves one part store: opens it once (mapped, or resident), checks that it is the part
    the manifest names, and returns the partial sums of the rows it owns. The body of the Ray
    actor; usable alone (for a test, or another transport). A part that cannot serve says why
    in `status()` (its constructor does not raise, so that Ray does not retry a hopeless open)."""

    def __init__(self, path, expected, layers, cache_bytes=256 << 20, resident=False):
        self.path, self.store, self.problem = path, None, None
        name = f"part {expected['index']} ('{path}')"
        try:
            self.store = Store(path, cache_bytes, resident=resident)
        except PKMStoreError as e:
            self.problem = f"{name} cannot be opened: {e}"
            return
        record = self.store.part()
        if record is None:
            self.problem = f"{name} is not a part of a split table (it has no part record)"
        elif record != expected:
            differ = ", ".join(f"{k} {record.get(k)!r} (manifest: {v!r})" for k, v in expected.items() if record.get(k) != v)
            self.problem = f"{name} is not the part the manifest names: {differ}"
        elif self.store.layers() != layers:
            self.problem = f"{name} holds layers {self.store.layers()}, the split {layers}"

    def status(self):
        """(process id, None) when serving, or (process id, why not)."""
        return os.getpid(), self.problem

    def sums(self, rows, weights, chunks, targets, outputs, gate=None):
        """float32 [outputs, part dim]: out[targets[i]] += weights[i] (per chunk) x row rows[i]
        of this part (row numbers inside the part). A gated layer's `gate` (value columns v,
        gate inputs [B, g], each row's query, activation) scales each row's weights by its gate
        first and returns the value columns only: float32 [outputs, v]."""
        if self.problem:
            raise SplitError(self.problem)
        if gate is None:
            return self.store.gather_reduce(rows, weights, chunks=chunks, targets=targets, outputs=outputs)
        v, inputs, queries, activation = gate
        scores = self.store.gate_scores(rows, v, inputs, queries, activation)
        gated = np.ascontiguousarray(weights.reshape(-1, chunks) * scores[:, None], np.float32)
        return np.ascontiguousarray(self.store.gather_reduce(rows, gated, chunks=chunks, targets=targets, outputs=outputs)[:, :v])


_actor_class = None
_actor_lock = threading.Lock()


def _ray():
    try:
        import ray
    except ImportError:
        raise ImportError("pkmstore.distributed needs Ray: pip install ray (Tools/bootstrap.sh installs it)") from None
    return ray


def _part_actor():
    global _actor_class
    with _actor_lock:
        if _actor_class is None:
            _actor_class = _ray().remote(PartServer)
        return _actor_class


class MemoryLayer:
    """A memory layer of a split store (the directory `memtool split` wrote), its parts served by
    Ray actors; `lookup` and `search` as `pkmstore.MemoryLayer`'s, outputs equal to the whole
    store's up to the order of float sums (index sets and weights identical).

    - `layer`: which of the split's layers (None: the only one).
    - `search_part`: the part whose keys this process searches with (every part holds them; the
      file must be readable here); None: the first one that is.
    - `actor_options`: options for every part's actor (`ray.remote` options, e.g. resources that
      pin part K to the host holding its file); `part_options` a list of per-part additions.
      Each part's path must exist on the host where its actor runs.
    - Ray is joined as `ray.init()` does (RAY_ADDRESS, or a new local cluster) unless already initialised.
    """

    def __init__(self, path, layer=None, *, search_part=None, cache_bytes=256 << 20, resident=False, threads=0,
                 max_restarts=4, max_task_retries=4, actor_options=None, part_options=None, timeout=120.0):
        ray = _ray()
        self.path = path
        self.manifest = manifest = read_manifest(path)
        self.axis = manifest["axis"]
        self.timeout = timeout
        files = [os.path.abspath(os.path.join(path, e["file"])) for e in manifest["parts"]]
        self.parts = len(files)
        order = range(self.parts) if search_part is None else [search_part]
        local = [k for k in order if os.path.exists(files[k])]
        if not local:
            raise SplitError(f"no part of '{path}' to search with is readable here (looked for {', '.join(files[k] for k in order)})")
        self._search = _LocalLayer(files[local[0]], layer=layer, threads=threads, cache_bytes=0)
        self.config = self._search.config
        self.gate_dim, self.gate_activation = self._search.gate_dim, self._search.gate_activation
        self.heads, self.key_dim, self.top_k, self.cores = self._search.heads, self._search.key_dim, self._search.top_k, self._search.cores
        self.expansion, self.value_dim, self.output_dim = self._search.expansion, self._search.value_dim, self._search.output_dim
        self._starts = np.array([e["first"] for e in manifest["parts"]], np.int64)
        if self.axis == "dims" and self.gate_dim:
            self._search.close()
            raise SplitError(f"'{path}' is split by columns, and layer '{layer or 'default'}' is gated: a column slice cannot compute "
                             "the gate's dot product (split it by rows)")
        if self.axis == "dims":
            c = self.cores
            if self.value_dim % self.parts or (c % self.parts and self.parts % c):
                raise SplitError(f"'{path}' is split into {self.parts} column slices, which the layer's {c} chunks do not line up with")
        if not ray.is_initialized():
            ray.init()
        # Threaded actors: a part serves several calls at once (the C API releases the GIL).
        options = {"num_cpus": 0, "max_restarts": max_restarts, "max_task_retries": max_task_retries, "max_concurrency": 4}
        options.update(actor_options or {})
        actor = _part_actor()
        self._actors = []
        for k in range(self.parts):
            mine = dict(options, **((part_options or [{}] * self.parts)[k] or {}))
            self._actors.append(actor.options(**mine).remote(files[k], _expected_record(manifest, k), manifest["layers"],
                                                             cache_bytes, resident))
        self._files = [e["file"] for e in manifest["parts"]]
        self._traffic_lock = threading.Lock()
        self._traffic = {"queries": 0, "calls": 0, "bytesSent": 0, "bytesReceived": 0}
        problems = [why for _, why in self._get([(k, a.status.remote()) for k, a in enumerate(self._actors)], "opening") if why]
        if problems:
            self.close()
            raise SplitError("; ".join(problems))

    def _get(self, calls, what):
        """The results of `calls` [(part, object ref)], in order; a failure names the part."""
        ray = _ray()
        results = []
        for k, ref in calls:
            try:
                results.append(ray.get(ref, timeout=self.timeout))
            except ray.exceptions.RayTaskError as e:
                cause = e.cause if getattr(e, "cause", None) is not None else e
                if isinstance(cause, PKMStoreError):
                    raise type(cause)(str(cause)) from None
                raise PartError(f"part {k} ({self._files[k]}) failed while {what}: {cause}") from None
            except ray.exceptions.RayError as e:
                raise PartError(f"part {k} ({self._files[k]}) failed while {what}: {type(e).__name__}: {e}") from None
        return results

    def search(self, queries, indices=None, weights=None):
        """Selected slots and weights, as `pkmstore.MemoryLayer.search` (done in this process)."""
        return self._search.search(queries, indices, weights)

    def lookup(self, queries, out=None, gate_input=None):
        """The layer's output float32 [B, d_out] with the slots and weights of `search`; a gated
        layer's `gate_input` float32 [B, gate_dim] as for `pkmstore.MemoryLayer.lookup`."""
        idx, w = self._search.search(queries)
        sums = self.sums(idx, w, gate_input)
        return self._search.project(sums, out), idx, w

    def sums(self, indices, weights, gate_input=None):
        """float32 [B, E, v]: each query's selected rows summed per projector, weighted (and, for
        a gated layer, gated by the parts that hold the rows), by the parts that own them, added
        in part order."""
        b = indices.shape[0]
        u = gate_inputs(gate_input, b, self.gate_dim)
        if u is not None and not np.isfinite(u).all():  # the parts' gate scores do not check them
            raise ArgumentError("gate_input contains NaN or infinity")
        per = self.heads * self.top_k
        rows, projectors = self._search.address(indices.reshape(-1))
        targets = (np.arange(b * per, dtype=np.int64) // per) * self.expansion + projectors
        w = weights.reshape(-1, self.cores)
        outputs = b * self.expansion
        if self.axis == "rows":
            owner = np.searchsorted(self._starts, rows, side="right") - 1
            requests = []
            slot_queries = np.arange(b * per, dtype=np.int64) // per
            for k in np.unique(owner):
                m = owner == k
                gate = None if u is None else (self.value_dim, u, np.ascontiguousarray(slot_queries[m]), self.gate_activation)
                requests.append((int(k), rows[m] - self._starts[k], np.ascontiguousarray(w[m]), self.cores, targets[m], gate))
        else:
            c, p = self.cores, self.parts
            requests = []
            for k in range(p):
                # The weights of the chunks part k's columns lie in: c/P of them, or the one holding them.
                chunk = w[:, k * (c // p):(k + 1) * (c // p)] if c % p == 0 else w[:, k // (p // c)]
                requests.append((k, rows, np.ascontiguousarray(chunk), max(1, c // p), targets, None))
        calls = [(k, self._actors[k].sums.remote(r, wk, chunks, t, outputs, gate)) for k, r, wk, chunks, t, gate in requests]
        partials = self._get(calls, "summing rows" if self.axis == "rows" else "summing columns")
        with self._traffic_lock:
            self._traffic["queries"] += b
            self._traffic["calls"] += len(calls)
            self._traffic["bytesSent"] += sum(r.nbytes + wk.nbytes + t.nbytes + (0 if g is None else g[1].nbytes + g[2].nbytes)
                                              for _, r, wk, _, t, g in requests)
            self._traffic["bytesReceived"] += sum(part.nbytes for part in partials)
        if self.axis == "rows":
            total = np.zeros((outputs, self.value_dim), np.float32)
            for part in partials:
                total += part
        else:
            total = np.concatenate(partials, axis=1)
        return total.reshape(b, self.expansion, self.value_dim)

    def traffic(self):
        """What lookups have moved so far: queries, calls to parts, and the bytes of the arrays
        sent to and received from them (Spec/DISTRIBUTED.md, "Bytes moved per query")."""
        with self._traffic_lock:
            return dict(self._traffic)

    def actor_pids(self):
        """The process id serving each part."""
        return [pid for pid, _ in self._get([(k, a.status.remote()) for k, a in enumerate(self._actors)], "reporting its process")]

    def close(self):
        """Stops the parts' actors and closes the search layer."""
        ray = _ray()
        for a in getattr(self, "_actors", []):
            ray.kill(a, no_restart=True)
        self._actors = []
        self._search.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"pkmstore.distributed.MemoryLayer('{self.path}', {self.parts} parts by {self.axis}, {self.config['scoring']})"
