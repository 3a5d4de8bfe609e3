"""Mamba's selective SSM (Gu & Dao 2023), counted as `mamba_ssm.Mamba` / transformers' `MambaMixer`
(in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj)."""

from __future__ import annotations

import math

from pydantic import Field, PositiveInt

from archc.ir.cost import Cost, CostCtx, StateTensor
from archc.ir.types import TensorType
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

    def dt_rank_for(self, d: int) -> int:
        """R: `dt_rank`, else ⌈d/16⌉ (mamba_ssm's default)."""
        return self.dt_rank or math.ceil(d / 16)


def _mamba_cost(p: MambaParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """in_proj d→2E, conv1d E·d_conv (+E), x_proj E→R+2N, dt_proj R→E (+E), A_log E·N, D E,
    out_proj E→d (Gu & Dao; mamba_ssm). Scan FLOPs 9·E·N per token (the paper's count).
    State: conv [E, d_conv] and ssm [E, N], as transformers' MambaCache."""
    d = width_of(ins)
    e, n = p.inner(d), p.d_state
    r = p.dt_rank_for(d)
    b = 1 if p.bias else 0
    params = (d * 2 * e + b * 2 * e) + (e * p.d_conv + (e if p.conv_bias else 0)) + e * (r + 2 * n) \
        + (r * e + e) + e * n + e + (e * d + b * d)
    flops = 2 * d * 2 * e + 2 * e * p.d_conv + 2 * e * (r + 2 * n) + 2 * r * e + 9 * e * n + 2 * e * d
    return Cost(params, flops, (d + 6 * e + 2 * n) * ctx.dtype_bytes)


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


register(OpDef("mamba", MambaParams, hidden_to_hidden, _mamba_cost,
               "Mamba selective SSM block: in_proj, causal conv, input-dependent Δ/B/C, gated output.",
               "ssm", default_name="mixer", role="mixer", causal=mixes_causally, state=_mamba_state,
               residual_weights=("out_proj.weight",),
               precision=(("in_proj.*", "projection"), ("x_proj.*", "projection"),
                          ("out_proj.*", "projection"), ("dt_proj.*", "discretization"), ("A_log", "ssm"),
                          ("D", "ssm"), ("conv1d.*", "conv")), prune=_mamba_prune))
