"""Trained PyTorch layers into a store, and served back as torch modules.

`from_pkm` converts a layer of the `product-key-memory` package (`product_key_memory.PKM`)
exactly as Spec/RETRIEVAL.md, "Queries from a model", describes, and returns a module whose
forward equals the layer's (eval mode): the dense parts (pre-LayerNorm, query projection, query
LayerNorm, output LayerNorm) run in torch, the search and the lookup-reduce in the store.
"""
import torch

from .convert import from_state_dict
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


def convert_pkm(pkm, store, *, dtype="f32", codec="zstd", **options):
    """Writes the PKM layer `pkm` into a new store at `store` (values stored as `dtype`, rounded
    to nearest even); the other keyword options are those of `pkmstore.import_`."""
    _check_pkm(pkm)
    gate = "relu" if isinstance(pkm.gate_activation, torch.nn.ReLU) else "softmax"
    converted = from_state_dict("pkm-pytorch", pkm.state_dict(), {"topk": pkm.topk, "gate": gate})
    converted.write(store, dtype=dtype, codec=codec, **options)


def from_pkm(pkm, store, *, dtype="f32", codec="zstd", threads=0, **options):
    """Converts `pkm` into the store at `store` and returns the module serving it from there."""
    convert_pkm(pkm, store, dtype=dtype, codec=codec, **options)
    return StorePKM(pkm, store, threads=threads)


class StoreMemory(torch.nn.Module):
    """Any converted layer served from a store: `queries(x)` (the model's own query projection and
    normalisation, a module or function) gives the projection, `layout` says how it becomes the
    store's [N, H, 2, d] ("head-side": already head, side, element, as Meta's memory;
    "side-head": side, head, element, as the PKM package; "shared": one [2, d] for every head,
    as UltraMem), and `after(out, x)` (optional) applies
    the layer's dense output part (value projection, gating, output norm). `layer` names the
    store's layer when it holds several (one per memory block of a model, sharing the values).
    `store` is a path, or an open layer: a `pkmstore.MemoryLayer`, or a
    `pkmstore.distributed.MemoryLayer` serving a split store from Ray actors. A gated layer
    (Spec/RETRIEVAL.md, "Gates") takes `gate_input(x)`, the model's gate input [N, g] (as
    UltraMemV2's `pre_values_proj`)."""

    def __init__(self, store, queries, layout="head-side", after=None, threads=0, layer=None, gate_input=None):
        super().__init__()
        if layout not in ("head-side", "side-head", "shared"):
            raise ArgumentError(f"layout '{layout}' is not head-side, side-head or shared")
        self.queries, self.layout, self.after, self.gate_input = queries, layout, after, gate_input
        self.layer = store if hasattr(store, "lookup") else MemoryLayer(store, layer=layer, threads=threads)
        self.last_indices = None

    @torch.no_grad()
    def forward(self, x):
        flat = x.reshape(-1, x.shape[-1])
        q = self.queries(flat)
        h, d = self.layer.heads, self.layer.key_dim
        if self.layout == "head-side":
            q = q.reshape(-1, h, 2, d)
        elif self.layout == "side-head":
            q = q.reshape(-1, 2, h, d).permute(0, 2, 1, 3)
        else:  # one query [2, d] for every head
            q = q.reshape(-1, 1, 2, d).expand(-1, h, 2, d)
        if self.gate_input is None:
            out, idx, _ = self.layer.lookup(q.to(torch.float32).contiguous().cpu())
        else:
            u = self.gate_input(flat).to(torch.float32).contiguous().cpu()
            out, idx, _ = self.layer.lookup(q.to(torch.float32).contiguous().cpu(), gate_input=u)
        self.last_indices = idx
        out = torch.from_numpy(out).to(x.dtype)
        if self.after is not None:
            out = self.after(out, flat)
        return out.reshape(*x.shape[:-1], -1)


class StorePKM(StoreMemory):
    """A PKM layer whose keys and values live in a store (a path or an open layer, as for
    `StoreMemory`): forward(x [b, t, dim]) -> [b, t, dim], with the layer's pre-LayerNorm, query
    projection, query LayerNorm and output LayerNorm."""

    def __init__(self, pkm, store, threads=0, layer=None):
        _check_pkm(pkm)
        heads, d = pkm.heads, pkm.keys.shape[-1]
        super().__init__(store, lambda x: pkm.norm(pkm.to_queries(pkm.pre_layernorm(x)).reshape(-1, 2, heads, d)),
                         layout="side-head", after=lambda out, x: pkm.output_norm(out), threads=threads, layer=layer)
        # The dense parts as submodules (for .eval() and .to()); the values live in the store only.
        self.pre_layernorm, self.to_queries, self.norm, self.output_norm = pkm.pre_layernorm, pkm.to_queries, pkm.norm, pkm.output_norm


def from_meta_memory(memory, store, *, values=None, dtype="f32", codec="zstd", threads=0):
    """Converts a `HashingMemory` (Meta's product-key memory) into the store at `store` and returns
    the module serving it: the query MLP, the value and SiLU projections and the gating run in
    torch as the layer's forward does, the search and the weighted sum of values in the store
    (for the PEER variant, gated by gelu(x · values_u[slot]): Spec/RETRIEVAL.md, "Gates")."""
    peer = getattr(memory, "use_peer_variant", False)
    converted = from_state_dict("meta-memory", memory.state_dict(), {"heads": memory.heads, "knn": memory.knn}, values=values)
    converted.write(store, dtype=dtype, codec=codec)
    silu = torch.nn.functional.silu

    def after(out, x):
        if peer:  # PEER's output is the gated sum itself, before the optional gating
            pass
        elif getattr(memory, "swilu_proj", False):
            out = memory.value_proj(out * silu(memory.swilu_projection(x)))
        elif getattr(memory, "v_proj", False):
            out = memory.value_proj(out)
        if getattr(memory, "gating", None) is not None:
            out = torch.sigmoid(memory.gating(x)) * out
        return out

    return StoreMemory(store, memory.query_proj, layout="head-side", after=after, threads=threads,
                       gate_input=(lambda x: x) if peer else None)
