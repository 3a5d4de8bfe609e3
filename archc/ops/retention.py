"""RetNet's multi-scale retention (Sun et al., 2023), laid out as torchscale's MultiScaleRetention."""

from __future__ import annotations

from dataclasses import replace

from pydantic import Field, PositiveInt

from archc.ir.cost import Cost, CostCtx, StateTensor
from archc.ir.sharding import Parallel, Sharding, Split, by_cuts, split_units
from archc.ir.types import TensorType
from archc.ir.weights import Weight, dense, pack_dense
from archc.ops.registry import (
    OpDef,
    Params,
    PruneAxis,
    ShapeError,
    divides,
    mixes_causally,
    no_prune,
    register,
    rows,
    width_of,
)


class RetentionParams(Params):
    heads: PositiveInt = Field(description="retention heads, each with its own decay γ")
    value_factor: PositiveInt = Field(2, description="value / gate width = value_factor·d")
    chunk: PositiveInt = Field(64, description="chunk length of the chunkwise form")
    head_dim: PositiveInt | None = Field(None, description="key width of a head; default d / heads")
    decays: list[int] | None = Field(None, description="which of the paper's decays γ_i = 1 − 2^(−5−i) the heads "
                                                      "take; default 0..heads−1 (written by archc prune)")

    def head_dims_for(self, d: int) -> tuple[int, int]:
        """(key, value) width of one head: `head_dim` (default d/H) and value_factor times it."""
        dk = self.head_dim or d // self.heads
        return dk, self.value_factor * dk

    def value_width(self, d: int) -> int:
        """The value / gate width, H·value_factor·dk (value_factor·d by default)."""
        return self.heads * self.head_dims_for(d)[1]

    def decay_indices(self) -> list[int]:
        return list(self.decays) if self.decays is not None else list(range(self.heads))


def _shape(p: RetentionParams, ins: list[TensorType]) -> TensorType:
    d = width_of(ins)
    if p.head_dim is None:
        divides(p.heads, d, "heads", "the width", arg="heads")
    if p.decays is not None and len(p.decays) != p.heads:
        raise ShapeError(f"decays lists {len(p.decays)} heads' decays for {p.heads} heads", arg="decays")
    return ins[0]


def _cost(p: RetentionParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """q, k d→H·dk; v, g d→vf·H·dk; out back to d (2 FLOPs per weight); per token (recurrent
    form) 4·H·dk·dv for the state update and read."""
    d = width_of(ins)
    dv = p.value_width(d)
    dk_h, dv_h = p.head_dims_for(d)
    dk = p.heads * dk_h
    flops = 2 * (2 * d * dk + 3 * d * dv) + 4 * p.heads * dk_h * dv_h
    return Cost(flops=flops, act_bytes=(d + 2 * dk + 2 * dv + dv) * ctx.dtype_bytes)


def _weights(p: RetentionParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """As torchscale's MultiScaleRetention, no biases: q_proj, k_proj d→H·dk, v_proj, g_proj
    d→H·dv, out_proj H·dv→d (scaled residual init); the GroupNorm has no affine weights. Heads
    are cut as rows of q/k/v/g and columns of out_proj."""
    d = width_of(ins)
    dk, dv = p.head_dims_for(d)
    h = p.heads
    return (dense("q_proj", d, h * dk, "projection", cuts_out=("heads",))
            + dense("k_proj", d, h * dk, "projection", cuts_out=("heads",))
            + dense("v_proj", d, h * dv, "projection", cuts_out=("heads",))
            + dense("g_proj", d, h * dv, "projection", cuts_out=("heads",))
            + dense("out_proj", h * dv, d, "projection", init="residual", cuts_in=("heads",)))


def _prune(p: RetentionParams, ins: list[TensorType]) -> tuple[PruneAxis, ...]:
    """Heads: q/k rows, v/g rows, out_proj columns of the head; the per-head GroupNorm makes the
    masked model exact. The kept heads keep their decays (`decays`), so all layers of one call
    site keep the same heads."""
    dk, dv = p.head_dims_for(width_of(ins))
    idx = p.decay_indices()

    def slices(h: int) -> dict:
        return {"q_proj.weight": (0, rows(h, dk)), "k_proj.weight": (0, rows(h, dk)), "v_proj.weight": (0, rows(h, dv)),
                "g_proj.weight": (0, rows(h, dv)), "out_proj.weight": (1, rows(h, dv))}

    return (PruneAxis("heads", p.heads, slices,
                      lambda kept: {"heads": len(kept), "head_dim": dk, "decays": [idx[h] for h in kept]},
                      lambda h: ("out_proj", rows(h, dv)), same_units=True),)



def _state(p: RetentionParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """S [H, d/H, vf·d/H] in fp32."""
    return (StateTensor("kv", (p.heads, *p.head_dims_for(width_of(ins)))),)


def _parallel(p: RetentionParams, ins: list[TensorType], packed: bool = False) -> Parallel:
    """By heads, as its prune rule cuts them (q/k/v/g rows, out_proj columns; the GroupNorm is
    per head, so nothing spans ranks; a packed qkvg_proj by its four parts), S by head; out_proj's
    partial sums all-reduced. A split sequence scans its chunk from the S the previous rank hands
    on (the chunkwise form's cross-chunk term)."""
    ws = _weights(p, ins)

    def tensor(t: int) -> Sharding:
        split_units("heads", p.heads, t, "retention")
        splits = by_cuts(ws, "heads")
        if packed:
            parts = tuple(w.shape[0] for w in ws if w.name.endswith("_proj.weight") and w.name != "out_proj.weight")
            splits = {"qkvg_proj.weight": Split(0, parts), "out_proj.weight": splits["out_proj.weight"]}
        return Sharding("heads", p.heads, t, splits, state={"kv": Split(0)})

    return Parallel(tensor=tensor, context="state")


RETENTION = register(OpDef(name="retention", params=RetentionParams, shape=_shape, cost=_cost,
               summary="RetNet multi-scale retention: per-head decays, xPos rotation, GroupNorm, swish gate; "
               "parallel, recurrent and chunkwise forms.", default_name="retention",
               role="mixer", causal=mixes_causally, state=_state, weights=_weights, prune=_prune,
               parallel=_parallel))


def _packed_weights(p: RetentionParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """`qkvg_proj` d→2·H·dk + 2·H·dv, the canonical q_proj, k_proj, v_proj and g_proj packed
    along the rows in that order, then `out_proj` (the `pack_in_proj` pass makes this op;
    checkpoints keep the canonical layout)."""
    return pack_dense(_weights(p, ins), "qkvg_proj", ("q_proj", "k_proj", "v_proj", "g_proj"))


register(replace(
    RETENTION, name="retention_packed", weights=_packed_weights, fuses=("retention",), prune=no_prune,
    parallel=lambda p, ins: _parallel(p, ins, packed=True),
    summary="`retention` with its q, k, v and g projections packed into one matmul (made by the `pack_in_proj` "
            "pass)."))
