"""Retrieval inside the model: the kNN memory of Memorizing Transformers (Wu, Rabe, Hutchins &
Szegedy 2022). The sequence is read in segments; each query attends its own segment causally
(local attention) and, separately, the top-k keys it retrieves from a memory of every earlier
segment's keys and values — exact inner-product search over the memory, by `torch.topk` or a
faiss index (`index="faiss"`). The two are mixed per head by a learned gate,

    out_h = σ(g_h) · softmax_topk(q · K_mem) V_mem + (1 − σ(g_h)) · softmax_causal(q · K_seg) V_seg

with queries and keys L2-normalized and scaled by a learned per-head temperature (the paper
normalizes both against its memory's staleness). The memory is not differentiated through (the
paper's stop-gradient); it is the op's declared decode state, `key` / `value` rows per token.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, PositiveInt

from archc.ir.cost import MAX_LEN, Cost, CostCtx, StateTensor
from archc.ir.sharding import Parallel, Sharding, Split, by_cuts, split_units
from archc.ir.types import TensorType
from archc.ir.weights import Weight, dense
from archc.ops.registry import (
    OpDef,
    Params,
    PruneAxis,
    divides,
    mixes_causally,
    register,
    rows,
    seq_len,
    width_of,
)


class KNNParams(Params):
    heads: PositiveInt = Field(4, description="heads")
    head_dim: PositiveInt | None = Field(None, description="width of each head (default d / heads)")
    topk: PositiveInt = Field(32, description="memories retrieved per query")
    segment: PositiveInt = Field(512, description="tokens per segment: local attention within it, retrieval before it")
    index: Literal["torch", "faiss"] = Field("torch", description="exact search by torch.topk, or a faiss inner-product "
                                             "index (eager forwards; traced graphs take torch.topk)")

    def head_dim_for(self, d: int) -> int:
        return self.head_dim or d // self.heads

    def inner(self, d: int) -> int:
        """heads · head_dim: the width of q, k and v."""
        return self.heads * self.head_dim_for(d)


def _shape(p: KNNParams, ins: list[TensorType]) -> TensorType:
    if p.head_dim is None:
        divides(p.heads, width_of(ins), "heads", "the width", arg="heads")
    return ins[0]


def _cost(p: KNNParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """q, k, v, o projections 8·d²; local attention 4·T_loc·d with T_loc the segment's average
    causal context (min(segment, T) + 1)/2; the search 2·M·d over the memory of M = max(0, T −
    segment) earlier tokens on average half of it, and attention over the top-k 4·k·d."""
    d, e = width_of(ins), p.inner(width_of(ins))
    t = seq_len(ins[0], ctx)
    local = (min(p.segment, t) + 1) / 2
    memory = max(0, t - p.segment) / 2
    return Cost(flops=8 * d * e + 4 * local * e + 2 * memory * e + 4 * p.topk * e,
                act_bytes=(2 * d + 4 * e + p.heads * (p.topk + math.ceil(local))) * ctx.dtype_bytes)


def _weights(p: KNNParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """q_proj, k_proj, v_proj d→H·hd, o_proj H·hd→d (scaled residual init), the gate g [heads]
    (zeros: half memory, half local) and the log-temperature of the normalized scores [heads]
    (own: log √head_dim)."""
    d, e = width_of(ins), p.inner(width_of(ins))
    heads = ("heads",)
    return (*dense("q_proj", d, e, "projection", cuts_out=heads), *dense("k_proj", d, e, "projection", cuts_out=heads),
            *dense("v_proj", d, e, "projection", cuts_out=heads),
            *dense("o_proj", e, d, "projection", init="residual", cuts_in=heads),
            Weight("gate", (p.heads,), "mix", "zeros", (("heads", 0),)),
            Weight("log_scale", (p.heads,), "mix", "own", (("heads", 0),)))


def _state(p: KNNParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """The memory: `key` and `value` [heads, max_len, head_dim] (keys normalized), one row per
    token — the current segment's tokens are its local context, the earlier ones its memory."""
    hd = p.head_dim_for(width_of(ins))
    return tuple(StateTensor(n, (p.heads, MAX_LEN, hd), "model", kv=True) for n in ("key", "value"))


def _prune(p: KNNParams, ins: list[TensorType]) -> tuple[PruneAxis, ...]:
    """Heads: a head's q, k, v rows, its gate and temperature, o_proj's columns; zeroed, its values
    are 0 in both its local attention and its memory: exact."""
    hd = p.head_dim_for(width_of(ins))

    def head(h: int) -> dict:
        return {"q_proj.weight": (0, rows(h, hd)), "k_proj.weight": (0, rows(h, hd)), "v_proj.weight": (0, rows(h, hd)),
                "o_proj.weight": (1, rows(h, hd)), "gate": (0, [h]), "log_scale": (0, [h])}

    return (PruneAxis("heads", p.heads, head, lambda kept: {"heads": len(kept), "head_dim": hd},
                      lambda h: ("o_proj", rows(h, hd))),)


def _parallel(p: KNNParams, ins: list[TensorType]) -> Parallel:
    """By heads, as the prune rule cuts them, the memory with them."""
    ws = _weights(p, ins)

    def tensor(t: int) -> Sharding:
        split_units("heads", p.heads, t, "kNN attention")
        return Sharding("heads", p.heads, t, by_cuts(ws, "heads"), state={"key": Split(0), "value": Split(0)})

    return Parallel(tensor=tensor, context="none",
                    why_context="a query's memory is every earlier segment: a split sequence would need all of them")


register(OpDef(name="knn_attention", params=KNNParams, shape=_shape, cost=_cost,
               summary="Memorizing Transformers' kNN memory: local attention in the segment, top-k retrieval from "
               "earlier segments' keys (torch or faiss), a learned gate.", default_name="attn", role="mixer",
               causal=mixes_causally, state=_state, weights=_weights, prune=_prune, parallel=_parallel,
               example={"heads": 4}))
