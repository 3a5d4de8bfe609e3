"""State-space mixers: S4 / S4D, Mamba (selective SSM) and Mamba-2 (SSD).

Parameter layouts follow the reference implementations so counts match exactly: Mamba as
`mamba_ssm.Mamba` / transformers' `MambaMixer` (in_proj, conv1d, x_proj, dt_proj, A_log, D,
out_proj), Mamba-2 as transformers' `Mamba2Mixer`. S4 follows the S4/S4D papers (Gu et al.).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, PositiveInt

from archc.ir.cost import Cost, CostCtx, StateTensor
from archc.ir.types import TensorType
from archc.ops.registry import (
    OpDef,
    Params,
    ShapeError,
    divides,
    mixes_causally,
    register,
    seq_len,
    width_of,
)


class S4Params(Params):
    d_state: PositiveInt = Field(64, description="state size N per channel (N/2 complex modes)")
    mode: Literal["dplr", "diag"] = Field("diag", description="diag = S4D; dplr = S4's diagonal plus low rank")
    rank: PositiveInt = Field(1, description="rank of the low-rank term P (dplr only)")
    discretization: Literal["zoh", "bilinear"] = Field("zoh", description="zoh: diag only; dplr needs bilinear")
    bidirectional: bool = Field(False, description="a second kernel runs right-to-left; outputs are summed")
    dt_min: float = Field(0.001, gt=0)
    dt_max: float = Field(0.1, gt=0)


def _s4_shape(p: S4Params, ins: list[TensorType]) -> TensorType:
    width_of(ins)
    if p.d_state % 2:
        raise ShapeError(f"d_state must be even (N/2 complex modes), got {p.d_state}", arg="d_state",
                         code="ARC0303")
    if p.dt_min >= p.dt_max:
        raise ShapeError("dt_min must be below dt_max", arg="dt_min", code="ARC0305")
    if p.mode == "dplr" and p.discretization == "zoh":
        raise ShapeError("S4's DPLR kernel (the Cauchy kernel with the Woodbury identity) needs the bilinear "
                         "discretization: exp(Δ(Λ − PP*)) has no diagonal-plus-low-rank form",
                         'write discretization="bilinear", or mode="diag" (S4D) for zero-order hold',
                         arg="discretization", code="ARC0305")
    return ins[0]


def _s4_cost(p: S4Params, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """Per channel H=d with N/2 complex modes stored as real pairs: A (log_A_real, A_imag) H·N, B H·N,
    C c·H·N (c = 2 if bidirectional), P rank·H·N (dplr), log_dt H, D H, then the output
    GLU(Linear(d, 2d)) 2d² + 2d. FLOPs: the output linear, the kernel and the FFT convolution (≈ 3
    FFTs of 2T points, 15·log2(2T) per channel). Kernel per channel and position: diag, a
    Vandermonde product, 8·c·N; dplr, Cauchy sums at T/2 + 1 frequencies over the full N modes,
    4·N·(c + r)(1 + r), plus C̃ = C(I − Ā^T) by binary powering, 4·N³·log2(T) / T.
    State (recurrent mode): the complex state [d, N/2] as N reals per channel."""
    d = width_of(ins)
    n, c = p.d_state, 2 if p.bidirectional else 1
    params = d * n * (2 + c) + (p.rank * d * n if p.mode == "dplr" else 0) + 2 * d + 2 * d * d + 2 * d
    t = seq_len(ins[0], ctx)
    if p.mode == "dplr":
        kernel = 4 * n * (c + p.rank) * (1 + p.rank) + 4 * n ** 3 * math.log2(max(t, 2)) / t
    else:
        kernel = 8 * c * n
    flops = 2 * d * 2 * d + kernel * d + 15 * c * d * math.log2(2 * t)
    return Cost(params, flops, (3 * d + 2 * d) * ctx.dtype_bytes)


def _s4_state(p: S4Params, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """The complex state [d, N/2] as N reals per channel (fp32); none when bidirectional."""
    return () if p.bidirectional else (StateTensor("ssm", (width_of(ins), p.d_state)),)


def _unless_bidirectional(p: S4Params, ins: list[TensorType]) -> bool | None:
    return not p.bidirectional


register(OpDef("s4", S4Params, _s4_shape, _s4_cost,
               "S4 / S4D structured state space (HiPPO-LegS init), FFT convolution or recurrence.", "ssm",
               default_name="mixer", role="mixer", causal=_unless_bidirectional, state=_s4_state))


class MambaParams(Params):
    d_state: PositiveInt = Field(16, description="SSM state size N")
    expand: PositiveInt = Field(2, description="inner width E = expand·d")
    d_conv: PositiveInt = Field(4, description="causal depthwise convolution width")
    dt_rank: PositiveInt | None = Field(None, description="rank of Δ's projection; default ceil(d/16)")
    conv_bias: bool = True
    bias: bool = Field(False, description="biases on in_proj and out_proj")

    def inner(self, d: int) -> int:
        """E = expand·d."""
        return self.expand * d

    def dt_rank_for(self, d: int) -> int:
        """R: `dt_rank`, else ⌈d/16⌉ (mamba_ssm's default)."""
        return self.dt_rank or math.ceil(d / 16)


def _ffn_like_shape(p: Params, ins: list[TensorType]) -> TensorType:
    width_of(ins)
    return ins[0]


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


register(OpDef("mamba", MambaParams, _ffn_like_shape, _mamba_cost,
               "Mamba selective SSM block: in_proj, causal conv, input-dependent Δ/B/C, gated output.",
               "ssm", default_name="mixer", role="mixer", causal=mixes_causally, state=_mamba_state,
               residual_weights=("out_proj.weight",)))


class Mamba2Params(Params):
    d_state: PositiveInt = Field(128, description="state size N per head")
    expand: PositiveInt = Field(2, description="inner width E = expand·d")
    d_conv: PositiveInt = 4
    head_dim: PositiveInt = Field(64, description="P; heads = E / P")
    groups: PositiveInt = Field(1, description="groups sharing B and C (like GQA for SSMs)")
    chunk: PositiveInt = Field(256, description="chunk length of the SSD algorithm")
    conv_bias: bool = True
    bias: bool = False

    def inner(self, d: int) -> int:
        """E = expand·d."""
        return self.expand * d

    def heads_for(self, d: int) -> int:
        """H = E / P."""
        return self.inner(d) // self.head_dim

    def conv_width(self, d: int) -> int:
        """Channels through the convolution: x, B and C, E + 2·G·N."""
        return self.inner(d) + 2 * self.groups * self.d_state


def _mamba2_shape(p: Mamba2Params, ins: list[TensorType]) -> TensorType:
    d = width_of(ins)
    divides(p.head_dim, p.expand * d, "head_dim", "the inner width expand·d", arg="head_dim")
    divides(p.groups, p.expand * d // p.head_dim, "groups", "the number of heads", arg="groups")
    return ins[0]


def _mamba2_cost(p: Mamba2Params, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """in_proj d→2E+2GN+H, conv1d over E+2GN channels, dt_bias H, A_log H, D H, gated RMSNorm E,
    out_proj E→d (Dao & Gu; transformers' Mamba2Mixer). SSD FLOPs per token: state in/out
    4·E·N plus the intra-chunk quadratic part 2·Q·(G·N + E) with Q = min(chunk, T).
    State: conv [E+2GN, d_conv] and ssm [H, P, N]."""
    d = width_of(ins)
    e, n, g = p.inner(d), p.d_state, p.groups
    h = p.heads_for(d)
    conv_dim = p.conv_width(d)
    b = 1 if p.bias else 0
    proj = 2 * e + 2 * g * n + h
    params = d * proj + b * proj + conv_dim * p.d_conv + (conv_dim if p.conv_bias else 0) + 3 * h + e \
        + e * d + b * d
    q = min(p.chunk, seq_len(ins[0], ctx))
    flops = 2 * d * proj + 2 * conv_dim * p.d_conv + 4 * e * n + 2 * q * (g * n + e) + 2 * e * d
    return Cost(params, flops, (d + proj + conv_dim + 2 * e) * ctx.dtype_bytes)


def _mamba2_state(p: Mamba2Params, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """conv [E + 2GN, d_conv] and ssm [H, P, N], fp32."""
    d = width_of(ins)
    return (StateTensor("conv", (p.conv_width(d), p.d_conv)),
            StateTensor("ssm", (p.heads_for(d), p.head_dim, p.d_state)))


register(OpDef("mamba2", Mamba2Params, _mamba2_shape, _mamba2_cost,
               "Mamba-2 (SSD): scalar-A multi-head SSM, chunked state-space duality, gated RMSNorm.",
               "ssm", default_name="mixer", role="mixer", causal=mixes_causally, state=_mamba2_state,
               residual_weights=("out_proj.weight",)))
