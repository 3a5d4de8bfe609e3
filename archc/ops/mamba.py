"""Mamba's selective SSM (Gu & Dao 2023), counted as `mamba_ssm.Mamba` / transformers' `MambaMixer`
(in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj)."""

from __future__ import annotations

import math

from pydantic import Field, PositiveFloat, PositiveInt

from archc.ir.cost import Cost, CostCtx, StateTensor
from archc.ir.sharding import Parallel, Reduction, Sharding, Split, split_units
from archc.ir.types import TensorType
from archc.ir.weights import Weight, conv1d, dense
from archc.ops.registry import (
    Expands,
    OpDef,
    Params,
    PruneAxis,
    hidden_to_hidden,
    mixes_causally,
    register,
    width_of,
)


class MambaParams(Params, Expands):
    d_state: PositiveInt = Field(16, description="SSM state size N")
    expand: PositiveInt = Field(2, description="inner width E = expand·d")
    d_conv: PositiveInt = Field(4, description="causal depthwise convolution width")
    dt_rank: PositiveInt | None = Field(None, description="rank of Δ's projection; default ceil(d/16)")
    conv_bias: bool = True
    bias: bool = Field(False, description="biases on in_proj and out_proj")
    inner_width: PositiveInt | None = Field(None, description="inner width E, instead of expand·d (archc prune)")
    norm_dt_bc: bool = Field(False, description="RMS-normalize Δ's low-rank input, B and C after x_proj "
                                                "(FalconMamba; Jamba with learned scales)")
    norm_dt_bc_weights: bool = Field(False, description="learned scales of those norms: `dt_layernorm` [R], "
                                                        "`b_layernorm`, `c_layernorm` [N] (Jamba)")
    norm_eps: PositiveFloat = Field(1e-6, description="ε of the Δ/B/C norms")

    def dt_rank_for(self, d: int) -> int:
        """R: `dt_rank`, else ⌈d/16⌉ (mamba_ssm's default)."""
        return self.dt_rank or math.ceil(d / 16)


def _mamba_cost(p: MambaParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """in_proj d→2E, conv1d over E channels, x_proj E→R+2N, dt_proj R→E, out_proj E→d (Gu &
    Dao; mamba_ssm). Scan FLOPs 9·E·N per token (the paper's count)."""
    d = width_of(ins)
    e, n = p.inner(d), p.d_state
    r = p.dt_rank_for(d)
    flops = 2 * d * 2 * e + 2 * e * p.d_conv + 2 * e * (r + 2 * n) + 2 * r * e + 9 * e * n + 2 * e * d
    return Cost(flops=flops, act_bytes=(d + 6 * e + 2 * n) * ctx.dtype_bytes)


def _mamba_weights(p: MambaParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """As `mamba_ssm.Mamba`: in_proj d→2E (x and z), the depthwise conv1d over E channels, x_proj
    E→R+2N (Δ's low rank, B, C) — these three with PyTorch's default init, as mamba_ssm keeps it —
    dt_proj R→E (Δ: its own init, and its bias the inverse softplus of a log-uniform step), A_log
    [E, N] and D [E] (own init: S4D-real's log(1..N) and ones), out_proj E→d (scaled residual init,
    as every op's residual output; mamba_ssm's is PyTorch's default over √n_layers). Every inner channel is
    a unit of `inner` pruning. With learned Δ/B/C norms (Jamba), their scales [R], [N], [N] (ones)."""
    d = width_of(ins)
    e, n, r = p.inner(d), p.d_state, p.dt_rank_for(d)
    return (dense("in_proj", d, 2 * e, "projection", p.bias, "own", cuts_out=("inner",))
            + conv1d("conv1d", e, p.d_conv, "conv", p.conv_bias, cuts=("inner",))
            + dense("x_proj", e, r + 2 * n, "projection", False, "own", cuts_in=("inner",))
            + dense("dt_proj", r, e, "discretization", True, "own", cuts_out=("inner",), bias_init="own")
            + (Weight("A_log", (e, n), "ssm", "own", (("inner", 0),)), Weight("D", (e,), "ssm", "own", (("inner", 0),)))
            + dense("out_proj", e, d, "projection", p.bias, "residual", cuts_in=("inner",))
            + ((Weight("dt_layernorm.weight", (r,), "norm", "ones"), Weight("b_layernorm.weight", (n,), "norm", "ones"),
                Weight("c_layernorm.weight", (n,), "norm", "ones")) if p.norm_dt_bc and p.norm_dt_bc_weights else ()))


def _mamba_state(p: MambaParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """conv [E, d_conv] (the last d_conv inputs of the convolution) and ssm [E, N], fp32, as
    transformers' MambaCache."""
    e = p.inner(width_of(ins))
    return StateTensor("conv", (e, p.d_conv)), StateTensor("ssm", (e, p.d_state))


def _mamba_prune(p: MambaParams, ins: list[TensorType]) -> tuple[PruneAxis, ...]:
    """Inner channels: channel e's rows of in_proj (x at e, z at E+e), its conv filter, x_proj's
    column, dt_proj's row and bias, A_log's row, D, and out_proj's column. Zeroed, x_e = 0 and
    z_e = 0, so y_e·silu(z_e) = 0 and nothing of the channel reaches B, C or Δ: exact."""
    e = p.inner(width_of(ins))

    def slices(c: int) -> dict:
        out = {"in_proj.weight": (0, [c, e + c]), "conv1d.weight": (0, [c]), "x_proj.weight": (1, [c]),
               "dt_proj.weight": (0, [c]), "dt_proj.bias": (0, [c]), "A_log": (0, [c]), "D": (0, [c]),
               "out_proj.weight": (1, [c])}
        if p.conv_bias:
            out["conv1d.bias"] = (0, [c])
        if p.bias:
            out["in_proj.bias"] = (0, [c, e + c])
        return out

    return (PruneAxis("inner", e, slices, lambda kept: {"inner_width": len(kept)}, lambda c: ("out_proj", [c])),)


def _mamba_parallel(p: MambaParams, ins: list[TensorType]) -> Parallel:
    """By inner channels (Megatron's Mamba split, and what `inner` pruning cuts): in_proj's x and z
    rows, the conv filters, dt_proj, A_log, D, out_proj's columns and the conv and ssm state by
    channel. x_proj reads every inner channel, so its output (Δ's rank R, B and C: R + 2N values a
    token) is all-reduced inside the op before Δ, B and C are formed; out_proj's partial sums are
    all-reduced after it. A split sequence scans from the conv and ssm state the previous rank
    hands on."""
    d = width_of(ins)
    e, n, r = p.inner(d), p.d_state, p.dt_rank_for(d)

    def tensor(t: int) -> Sharding:
        split_units("inner channels", e, t, "Mamba")
        rows, cols = Split(0), Split(1)
        w = {"in_proj.weight": Split(0, (e, e)), "conv1d.weight": rows, "x_proj.weight": cols,
             "dt_proj.weight": rows, "dt_proj.bias": rows, "A_log": rows, "D": rows, "out_proj.weight": cols}
        if p.conv_bias:
            w["conv1d.bias"] = rows
        if p.bias:
            w["in_proj.bias"] = Split(0, (e, e))
        return Sharding("inner", e, t, w, state={"conv": rows, "ssm": rows},
                        reductions=(Reduction("x_proj's Δ rank, B and C", r + 2 * n),),
                        after_reduce=("out_proj.bias",) if p.bias else ())

    return Parallel(tensor=tensor, context="state")


register(OpDef(name="mamba", params=MambaParams, shape=hidden_to_hidden, cost=_mamba_cost,
               summary="Mamba selective SSM block: in_proj, causal conv, input-dependent Δ/B/C, gated output.", default_name="mixer", role="mixer", causal=mixes_causally, state=_mamba_state,
               weights=_mamba_weights, prune=_mamba_prune, parallel=_mamba_parallel))
