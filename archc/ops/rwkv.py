"""RWKV's time-mix (WKV attention-like recurrence) and channel-mix (Peng et al.).

Version 4 follows transformers' RwkvSelfAttention / RwkvFeedForward; version 6 (Finch) adds
data-dependent token shift and decay through low-rank (LoRA-style) projections.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from archc.ir.cost import NEG_FILL, Cost, CostCtx, StateTensor
from archc.ir.sharding import Parallel, Sharding, Split, by_cuts, split_units
from archc.ir.types import TensorType
from archc.ir.weights import Weight, dense
from archc.ops.registry import (
    OpDef,
    Params,
    PruneAxis,
    divides,
    hidden_to_hidden,
    mixes_causally,
    register,
    width_of,
)


class TimeMixParams(Params):
    version: Literal[4, 6] = 4
    hidden: PositiveInt | None = Field(None, description="attention width A (v6: heads × head_size); default d")
    head_size: PositiveInt = Field(64, description="v6: width of each WKV head")
    mix_rank: PositiveInt = Field(32, description="v6: rank of the data-dependent token-shift projection")
    decay_rank: PositiveInt = Field(64, description="v6: rank of the data-dependent decay projection")


def _tm_shape(p: TimeMixParams, ins: list[TensorType]) -> TensorType:
    d = width_of(ins)
    if p.version == 6:
        if p.hidden is None:
            divides(p.head_size, d, "head_size", "the width", arg="head_size")
        else:
            divides(p.head_size, p.hidden, "head_size", "the attention width `hidden`", arg="head_size")
    return ins[0]


def _tm_cost(p: TimeMixParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """v4: key/value/receptance d→A, output A→d, ~10 FLOPs per channel for the WKV update.
    v6 (A = H·hs): r/k/v/g d→A, output A→d, the low-rank token-shift (d·5r, 5r·d) and decay
    (d·r', r'·A) projections, 4·H·hs² for the WKV matrix."""
    d = width_of(ins)
    a = p.hidden or d
    if p.version == 4:
        flops = 2 * (3 * d * a + a * d) + 10 * a
    else:
        h = a // p.head_size
        flops = 2 * (5 * d * a + 2 * 5 * p.mix_rank * d + p.decay_rank * (d + a)) + 4 * h * p.head_size ** 2
    return Cost(flops=flops, act_bytes=8 * d * ctx.dtype_bytes)


def _tm_weights(p: TimeMixParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """As transformers' RwkvSelfAttention (v4): time_decay and time_first [A] (decay), the
    token-shift ratios time_mix_{key,value,receptance} [1, 1, d] (mix), key/value/receptance
    d→A, output A→d (scaled residual init); the decays and ratios have RWKV's depth-dependent
    own init. v6 (Finch): time_maa_{x,w,k,v,r,g} [1, 1, d], the low-rank time_maa_w1 [d, 5r] and
    time_maa_w2 [5, r, d], time_decay [1, 1, A] with time_decay_w1 [d, r'] and time_decay_w2
    [r', A], the bonus time_faaaa [H, hs], receptance/key/value/gate d→A, output A→d, and the
    GroupNorm ln_x (per head)."""
    d = width_of(ins)
    a = p.hidden or d
    if p.version == 4:
        inner = (("inner", 0),)
        return (Weight("time_decay", (a,), "decay", "own", inner), Weight("time_first", (a,), "decay", "own", inner),
                *(Weight(f"time_mix_{n}", (1, 1, d), "mix", "own") for n in ("key", "value", "receptance")),
                *(w for n in ("key", "value", "receptance") for w in dense(n, d, a, "projection", cuts_out=("inner",))),
                *dense("output", a, d, "projection", init="residual", cuts_in=("inner",)))
    h, hs, heads = a // p.head_size, p.head_size, ("heads",)
    return (*(Weight(f"time_maa_{n}", (1, 1, d), "mix", "own") for n in ("x", "w", "k", "v", "r", "g")),
            Weight("time_maa_w1", (d, 5 * p.mix_rank), "mix", "own"),
            Weight("time_maa_w2", (5, p.mix_rank, d), "mix", "own"),
            Weight("time_decay", (1, 1, a), "decay", "own", (("heads", 2),)),
            Weight("time_decay_w1", (d, p.decay_rank), "decay", "own"),
            Weight("time_decay_w2", (p.decay_rank, a), "decay", "own", (("heads", 1),)),
            Weight("time_faaaa", (h, hs), "decay", "own", (("heads", 0),)),
            *(w for n in ("receptance", "key", "value", "gate") for w in dense(n, d, a, "projection", cuts_out=heads)),
            *dense("output", a, d, "projection", init="residual", cuts_in=heads),
            Weight("ln_x.weight", (a,), "norm", "ones", (("heads", 0),)),
            Weight("ln_x.bias", (a,), "norm", "zeros", (("heads", 0),)))


def _tm_state(p: TimeMixParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """v4: the previous token [d] and the WKV numerator, denominator and running max [A]; v6: shift
    [d] and the WKV matrix [H, hs, hs]. All fp32."""
    d = width_of(ins)
    a = p.hidden or d
    if p.version == 4:
        return (StateTensor("shift", (d,)), StateTensor("num", (a,)), StateTensor("den", (a,)),
                StateTensor("max", (a,), fill=NEG_FILL))
    return StateTensor("shift", (d,)), StateTensor("wkv", (a // p.head_size, p.head_size, p.head_size))


def _tm_prune(p: TimeMixParams, ins: list[TensorType]) -> tuple[PruneAxis, ...]:
    """RWKV-4: the attention width's channels — channel c's key, value and receptance rows, its
    output column, time_decay and time_first. Zeroed, k_c = v_c = 0 and σ(r_c)·wkv_c = 0: exact.
    RWKV-6: heads — head h's channels c ∈ [h·hs, (h+1)·hs) in receptance/key/value/gate rows,
    output columns, time_decay, decay_w2's columns, time_faaaa's row h and ln_x's weight and bias.
    Zeroed, the head's wkv is 0, its GroupNorm group (normalized on its own) is 0·w + 0 = 0 and
    silu(0) = 0 gates it: exact."""
    a = p.hidden or width_of(ins)
    if p.version == 6:
        hs = p.head_size

        def head(h: int) -> dict:
            c = list(range(h * hs, (h + 1) * hs))
            rows = {f"{m}.weight": (0, c) for m in ("receptance", "key", "value", "gate")}
            return {**rows, "output.weight": (1, c), "time_decay": (2, c), "time_decay_w2": (1, c),
                    "time_faaaa": (0, [h]), "ln_x.weight": (0, c), "ln_x.bias": (0, c)}

        return (PruneAxis("heads", a // hs, head, lambda kept: {"hidden": len(kept) * hs},
                          lambda h: ("output", list(range(h * hs, (h + 1) * hs)))),)

    def slices(c: int) -> dict:
        return {"key.weight": (0, [c]), "value.weight": (0, [c]), "receptance.weight": (0, [c]),
                "output.weight": (1, [c]), "time_decay": (0, [c]), "time_first": (0, [c])}

    return (PruneAxis("inner", a, slices, lambda kept: {"hidden": len(kept)}, lambda c: ("output", [c])),)


def _cm_prune(p: ChannelMixParams, ins: list[TensorType]) -> tuple[PruneAxis, ...]:
    """Hidden units: key's row j and value's column j; relu(0)² · 0 = 0: exact."""
    return (PruneAxis("ffn", p.hidden, lambda j: {"key.weight": (0, [j]), "value.weight": (1, [j])},
                      lambda kept: {"hidden": len(kept)}, lambda j: ("value", [j])),)


def _tm_parallel(p: TimeMixParams, ins: list[TensorType]) -> Parallel:
    """RWKV-4 by channels, RWKV-6 by heads, as the prune rule cuts them (receptance/key/value/gate
    rows, output columns, the decays and bonus, v6's decay_w2 columns and per-head ln_x), the WKV
    state with them; the token-shift ratios and low-rank mixers read x, which every rank holds, so
    they are replicated, as is the shift state. output's partial sums are all-reduced. A split
    sequence scans from the handed-on WKV state and the previous token."""
    a = p.hidden or width_of(ins)
    ws = _tm_weights(p, ins)
    unit, units = ("inner", a) if p.version == 4 else ("heads", a // p.head_size)
    state = {"num": Split(0), "den": Split(0), "max": Split(0)} if p.version == 4 else {"wkv": Split(0)}

    def tensor(t: int) -> Sharding:
        split_units(unit, units, t, f"RWKV-{p.version} time-mix")
        return Sharding(unit, units, t, by_cuts(ws, unit), state=state)

    return Parallel(tensor=tensor, context="state")


def _cm_parallel(p: ChannelMixParams, ins: list[TensorType]) -> Parallel:
    """By hidden units: key rows, value columns. The receptance gate σ(r(x)) multiplies value's
    output elementwise, so each rank gates its partial sum (σ(r)·Σᵢ vᵢ = Σᵢ σ(r)·vᵢ) and
    receptance is replicated. A split sequence needs the previous rank's last token (the shift)."""
    ws = _cm_weights(p, ins)

    def tensor(t: int) -> Sharding:
        split_units("hidden units", p.hidden, t, "RWKV channel-mix")
        return Sharding("ffn", p.hidden, t, by_cuts(ws, "ffn"))

    return Parallel(tensor=tensor, context="state")


register(OpDef(name="rwkv_time_mix", params=TimeMixParams, shape=_tm_shape, cost=_tm_cost,
               summary="RWKV time-mix: token shift and the WKV recurrence with decay w and bonus u (v4; v6 Finch).", default_name="attention", role="mixer", causal=mixes_causally, state=_tm_state,
               weights=_tm_weights, prune=_tm_prune, parallel=_tm_parallel))


class ChannelMixParams(Params):
    hidden: PositiveInt = Field(description="inner width of the squared-ReLU key projection")


def _cm_cost(p: ChannelMixParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """key d→hidden, receptance d→d, value hidden→d: 2 FLOPs per weight."""
    d, h = width_of(ins), p.hidden
    return Cost(flops=2 * (d * h + d * d + h * d), act_bytes=(3 * d + 2 * h) * ctx.dtype_bytes)


def _cm_weights(p: ChannelMixParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """As transformers' RwkvFeedForward: time_mix_{key,receptance} [1, 1, d] (own, depth-
    dependent), key d→hidden, receptance d→d, value hidden→d (scaled residual init), no biases."""
    d = width_of(ins)
    return (tuple(Weight(f"time_mix_{n}", (1, 1, d), "mix", "own") for n in ("key", "receptance"))
            + dense("key", d, p.hidden, "ffn", cuts_out=("ffn",)) + dense("receptance", d, d, "ffn")
            + dense("value", p.hidden, d, "ffn", init="residual", cuts_in=("ffn",)))


def _cm_state(p: ChannelMixParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """The previous token [d] (fp32): the token shift looks one step back."""
    return (StateTensor("shift", (width_of(ins),)),)


register(OpDef(name="rwkv_channel_mix", params=ChannelMixParams, shape=hidden_to_hidden, cost=_cm_cost,
               summary="RWKV channel-mix: token shift, squared-ReLU key, sigmoid receptance gate.",
               default_name="feed_forward", role="ffn", causal=mixes_causally, state=_cm_state,
               weights=_cm_weights, prune=_cm_prune, parallel=_cm_parallel))
