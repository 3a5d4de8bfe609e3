"""Mamba-2 (SSD, Dao & Gu 2024), counted as transformers' `Mamba2Mixer`."""

from __future__ import annotations

from pydantic import Field, PositiveInt

from archc.ir.cost import Cost, CostCtx, StateTensor
from archc.ir.sharding import CannotShard, Parallel, Reduction, Sharding, Split, split_units
from archc.ir.types import TensorType
from archc.ir.weights import Weight, conv1d, dense
from archc.ops.registry import (
    Expands,
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


class Mamba2Params(Params, Expands):
    d_state: PositiveInt = Field(128, description="state size N per head")
    expand: PositiveInt = Field(2, description="inner width E = expand·d")
    d_conv: PositiveInt = 4
    head_dim: PositiveInt = Field(64, description="P; heads = E / P")
    groups: PositiveInt = Field(1, description="groups sharing B and C (like GQA for SSMs)")
    chunk: PositiveInt = Field(256, description="chunk length of the SSD algorithm")
    conv_bias: bool = True
    bias: bool = False
    inner_width: PositiveInt | None = Field(None, description="inner width E = heads·P, instead of expand·d "
                                                             "(archc prune)")

    def heads_for(self, d: int) -> int:
        """H = E / P."""
        return self.inner(d) // self.head_dim

    def conv_width(self, d: int) -> int:
        """Channels through the convolution: x, B and C, E + 2·G·N."""
        return self.inner(d) + 2 * self.groups * self.d_state


def _mamba2_shape(p: Mamba2Params, ins: list[TensorType]) -> TensorType:
    d = width_of(ins)
    divides(p.head_dim, p.inner(d), "head_dim", "the inner width expand·d", arg="head_dim")
    divides(p.groups, p.heads_for(d), "groups", "the number of heads", arg="groups")
    return ins[0]


def _mamba2_cost(p: Mamba2Params, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """in_proj d→2E+2GN+H, conv1d over E+2GN channels, out_proj E→d (Dao & Gu; transformers'
    Mamba2Mixer). SSD FLOPs per token: state in/out 4·E·N plus the intra-chunk quadratic part
    2·Q·(G·N + E) with Q = min(chunk, T)."""
    d = width_of(ins)
    e, n, g = p.inner(d), p.d_state, p.groups
    h = p.heads_for(d)
    conv_dim = p.conv_width(d)
    proj = 2 * e + 2 * g * n + h
    q = min(p.chunk, seq_len(ins[0], ctx))
    flops = 2 * d * proj + 2 * conv_dim * p.d_conv + 4 * e * n + 2 * q * (g * n + e) + 2 * e * d
    return Cost(flops=flops, act_bytes=(d + proj + conv_dim + 2 * e) * ctx.dtype_bytes)


def _mamba2_weights(p: Mamba2Params, ins: list[TensorType]) -> tuple[Weight, ...]:
    """As transformers' Mamba2Mixer: in_proj d→E (z) + E+2GN (x, B, C) + H (Δ), the depthwise
    conv1d over E+2GN channels, dt_bias, A_log and D per head (own init: log-uniform Δ, log(1..H),
    ones), the gated RMSNorm's `norm.weight` [E], out_proj E→d (scaled residual init);
    the module draws in_proj as mamba_ssm, PyTorch's default."""
    d = width_of(ins)
    e, h = p.inner(d), p.heads_for(d)
    conv, heads = p.conv_width(d), (("heads", 0),)
    return (dense("in_proj", d, e + conv + h, "projection", p.bias, "own", cuts_out=("heads",))
            + conv1d("conv1d", conv, p.d_conv, "conv", p.conv_bias, cuts=("heads",))
            + (Weight("dt_bias", (h,), "discretization", "own", heads), Weight("A_log", (h,), "ssm", "own", heads),
               Weight("D", (h,), "ssm", "own", heads), Weight("norm.weight", (e,), "norm", "ones", heads))
            + dense("out_proj", e, d, "projection", p.bias, "residual", cuts_in=("heads",)))


def _mamba2_state(p: Mamba2Params, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """conv [E + 2GN, d_conv] and ssm [H, P, N], fp32."""
    d = width_of(ins)
    return (StateTensor("conv", (p.conv_width(d), p.d_conv)),
            StateTensor("ssm", (p.heads_for(d), p.head_dim, p.d_state)))


def _mamba2_prune(p: Mamba2Params, ins: list[TensorType]) -> tuple[PruneAxis, ...]:
    """Heads: head h's P rows of z, of x (in xBC) and its Δ row of in_proj, its P conv channels,
    dt_bias, A_log, D, its P norm weights and out_proj columns; each B/C group keeps the same
    number of heads. Zeroed, the head's y is 0, but the gated RMSNorm of a group averages over the
    group's width: the pruned norm's weights are scaled by √(H/H′), so masked and pruned agree up
    to the norm's ε."""
    d = width_of(ins)
    e, h, hp = p.inner(d), p.heads_for(d), p.head_dim
    conv = p.conv_width(d)

    def slices(u: int) -> dict:
        r = rows(u, hp)
        out = {"in_proj.weight": (0, r + [e + i for i in r] + [e + conv + u]), "conv1d.weight": (0, r),
               "dt_bias": (0, [u]), "A_log": (0, [u]), "D": (0, [u]), "norm.weight": (0, r),
               "out_proj.weight": (1, r)}
        if p.conv_bias:
            out["conv1d.bias"] = (0, r)
        if p.bias:
            out["in_proj.bias"] = out["in_proj.weight"]
        return out

    return (PruneAxis("heads", h, slices, lambda kept: {"inner_width": len(kept) * hp},
                      lambda u: ("out_proj", rows(u, hp)), groups=p.groups,
                      scale=lambda kept: {"norm.weight": (h / kept) ** 0.5},
                      note="equal up to the gated RMSNorm's ε (its mean is over the pruned width)"),)


def _mamba2_parallel(p: Mamba2Params, ins: list[TensorType]) -> Parallel:
    """By heads (mamba_ssm's and Megatron's split): in_proj's z, x and Δ rows, the conv's x
    channels, dt_bias, A_log, D, the norm's weights, out_proj's columns and the ssm state by head;
    B and C (in_proj rows, conv channels, conv state) by group while the groups split evenly, each
    group replicated on the degree/G ranks whose heads read it beyond. The gated RMSNorm normalizes
    over a group's channels: when a group spans ranks, its partial sums of squares (G values a
    token) are all-reduced inside the op (Megatron requires G divisible by the degree instead).
    out_proj's partial sums are all-reduced. A split sequence scans from the handed-on state."""
    d = width_of(ins)
    e, h, g, n = p.inner(d), p.heads_for(d), p.groups, p.d_state

    def tensor(t: int) -> Sharding:
        split_units("heads", h, t, "Mamba-2")
        if g % t and t % g:
            raise CannotShard(f"{g} B/C groups of Mamba-2 neither split {t} ways nor divide {t}")
        rg = 1 if g % t == 0 else t // g
        rows = Split(0)
        in_proj = Split(0, (e, e, g * n, g * n, h), (1, 1, rg, rg, 1))
        conv = Split(0, (e, g * n, g * n), (1, rg, rg))
        w = {"in_proj.weight": in_proj, "conv1d.weight": conv, "dt_bias": rows, "A_log": rows, "D": rows,
             "norm.weight": rows, "out_proj.weight": Split(1)}
        if p.conv_bias:
            w["conv1d.bias"] = conv
        if p.bias:
            w["in_proj.bias"] = in_proj
        reductions = () if rg == 1 else (Reduction("the gated RMSNorm's sums of squares per group", g),)
        return Sharding("heads", h, t, w, state={"conv": conv, "ssm": rows}, reductions=reductions,
                        after_reduce=("out_proj.bias",) if p.bias else ())

    return Parallel(tensor=tensor, context="state")


register(OpDef(name="mamba2", params=Mamba2Params, shape=_mamba2_shape, cost=_mamba2_cost,
               summary="Mamba-2 (SSD): scalar-A multi-head SSM, chunked state-space duality, gated RMSNorm.", default_name="mixer", role="mixer", causal=mixes_causally, state=_mamba2_state,
               weights=_mamba2_weights, prune=_mamba2_prune, parallel=_mamba2_parallel))
