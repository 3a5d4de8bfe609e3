"""RWKV's time-mix (WKV attention-like recurrence) and channel-mix (Peng et al.).

Version 4 follows transformers' RwkvSelfAttention / RwkvFeedForward; version 6 (Finch) adds
data-dependent token shift and decay through low-rank (LoRA-style) projections.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from archc.ir.cost import NEG_FILL, Cost, CostCtx, StateTensor
from archc.ir.types import TensorType
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
    """v4: time_decay A, time_first A, time_mix_{k,v,r} 3d, key/value/receptance d→A, output A→d.
    State: the previous token [d] and the WKV numerator, denominator and max [A] (fp32).
    v6 (A = H·hs, default d): time_maa_{x,w,k,v,r,g} 6d, maa_w1 d·5r, maa_w2 5r·d, time_decay A,
    decay_w1 d·r', decay_w2 r'·A, time_faaaa A, r/k/v/g d→A, o A→d, ln_x GroupNorm 2A.
    State: shift [d], wkv [H, hs, hs]."""
    d = width_of(ins)
    a = p.hidden or d
    if p.version == 4:
        params = 2 * a + 3 * d + 3 * d * a + a * d
        flops = 2 * (3 * d * a + a * d) + 10 * a
    else:
        h = a // p.head_size
        params = (6 * d + 2 * 5 * p.mix_rank * d + a + p.decay_rank * (d + a) + a + 5 * d * a + 2 * a)
        flops = 2 * (5 * d * a + 2 * 5 * p.mix_rank * d + p.decay_rank * (d + a)) + 4 * h * p.head_size ** 2
    return Cost(params, flops, 8 * d * ctx.dtype_bytes)


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


register(OpDef("rwkv_time_mix", TimeMixParams, _tm_shape, _tm_cost,
               "RWKV time-mix: token shift and the WKV recurrence with decay w and bonus u (v4; v6 Finch).",
               "rwkv", default_name="attention", role="mixer", causal=mixes_causally, state=_tm_state,
               residual_weights=("output.weight",),
               precision=(("key.*", "projection"), ("value.*", "projection"), ("receptance.*", "projection"),
                          ("output.*", "projection"), ("gate.*", "projection"), ("time_decay*", "decay"),
                          ("time_first", "decay"), ("time_faaaa", "decay"), ("time_mix_*", "mix"),
                          ("time_maa_*", "mix"), ("ln_x.*", "norm")), prune=_tm_prune))


class ChannelMixParams(Params):
    hidden: PositiveInt = Field(description="inner width of the squared-ReLU key projection")


def _cm_cost(p: ChannelMixParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """time_mix_{k,r} 2d, key d→hidden, receptance d→d, value hidden→d, no biases.
    State: the previous token [d]."""
    d, h = width_of(ins), p.hidden
    params = 2 * d + d * h + d * d + h * d
    return Cost(params, 2 * (d * h + d * d + h * d), (3 * d + 2 * h) * ctx.dtype_bytes)


def _cm_state(p: ChannelMixParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """The previous token [d] (fp32): the token shift looks one step back."""
    return (StateTensor("shift", (width_of(ins),)),)


register(OpDef("rwkv_channel_mix", ChannelMixParams, hidden_to_hidden, _cm_cost,
               "RWKV channel-mix: token shift, squared-ReLU key, sigmoid receptance gate.", "rwkv",
               default_name="feed_forward", role="ffn", causal=mixes_causally, state=_cm_state,
               residual_weights=("value.weight",),
               precision=(("time_mix_*", "mix"),), prune=_cm_prune))
