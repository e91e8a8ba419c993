"""Trained PyTorch layers into a store, and served back as torch modules.

`from_pkm` converts a layer of the `product-key-memory` package (`product_key_memory.PKM`)
exactly as Spec/RETRIEVAL.md, "Queries from a model", describes, and returns a module whose
forward equals the layer's (eval mode): the dense parts (pre-LayerNorm, query projection, query
LayerNorm, output LayerNorm) run in torch, the search and the lookup-reduce in the store.
"""
import os
import tempfile

import numpy as np
import torch

from . import import_
from .errors import ArgumentError
from .layer import MemoryLayer


def _check_pkm(pkm):
    if getattr(pkm, "concat_values_and_combine", False):
        raise ArgumentError("PKM(concat_values_and_combine=True) mixes heads with a dense layer after the gather; "
                            "the store serves the summed form only")
    if not getattr(pkm, "use_layernorm", True):
        raise ArgumentError("PKM(use_layernorm=False) normalises queries with BatchNorm over the wrong axis; "
                            "only the LayerNorm form converts")
    if getattr(pkm, "differentiable_topk", False):
        raise ArgumentError("PKM(differentiable_topk=True) selects by coordinate descent, not the exact top-k the store computes")


def pkm_tensors(pkm):
    """The store's tensors of a PKM layer: row_keys, col_keys [H, 1, n, d] and values [n², dim], float32."""
    keys = pkm.keys.detach().to(torch.float32).cpu().numpy()            # [H, n, 2, d]
    return {
        "row_keys": np.ascontiguousarray(keys[:, None, :, 0, :]),
        "col_keys": np.ascontiguousarray(keys[:, None, :, 1, :]),
        "values": np.ascontiguousarray(pkm.values.weight.detach().to(torch.float32).cpu().numpy()),
    }


def convert_pkm(pkm, store, *, dtype="f32", codec="zstd", **options):
    """Writes the PKM layer `pkm` into a new store at `store` (values stored as `dtype`, rounded
    to nearest even); the other keyword options are those of `pkmstore.import_`."""
    _check_pkm(pkm)
    activation = "relu" if isinstance(pkm.gate_activation, torch.nn.ReLU) else "softmax"
    with tempfile.TemporaryDirectory() as folder:
        for name, array in pkm_tensors(pkm).items():
            np.save(os.path.join(folder, name + ".npy"), array)
        import_(store, folder, scoring="pkm", topk=pkm.topk, activation=activation, dtype=dtype, codec=codec, **options)


class StorePKM(torch.nn.Module):
    """A PKM layer whose keys and values live in a store: forward(x [b, t, dim]) -> [b, t, dim]."""

    def __init__(self, pkm, store, threads=0):
        super().__init__()
        _check_pkm(pkm)
        self.pre_layernorm, self.to_queries, self.norm = pkm.pre_layernorm, pkm.to_queries, pkm.norm
        self.output_norm = pkm.output_norm
        self.heads, self.dim_head = pkm.heads, pkm.keys.shape[-1]
        self.layer = MemoryLayer(store, threads=threads)
        self.last_indices = None

    @torch.no_grad()
    def forward(self, x):
        b, t, _ = x.shape
        q = self.to_queries(self.pre_layernorm(x)).reshape(b * t, 2, self.heads, self.dim_head)
        q = self.norm(q).permute(0, 2, 1, 3).to(torch.float32).contiguous()
        out, idx, _ = self.layer.lookup(q.cpu())
        self.last_indices = idx
        return self.output_norm(torch.from_numpy(out).to(x.dtype).reshape(b, t, -1))


def from_pkm(pkm, store, *, dtype="f32", codec="zstd", threads=0, **options):
    """Converts `pkm` into the store at `store` and returns the module serving it from there."""
    convert_pkm(pkm, store, dtype=dtype, codec=codec, **options)
    return StorePKM(pkm, store, threads=threads)
