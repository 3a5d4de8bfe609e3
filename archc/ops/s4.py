"""S4 / S4D structured state spaces (Gu et al.): HiPPO-LegS init, DPLR or diagonal A."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, PositiveInt

from archc.ir.cost import Cost, CostCtx, StateTensor
from archc.ir.types import TensorType
from archc.ir.weights import Weight, dense
from archc.ops.registry import (
    OpDef,
    Params,
    ShapeError,
    register,
    replicated_because,
    seq_len,
    unless_bidirectional,
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
    """Per channel H=d with N/2 complex modes (c = 2 kernels if bidirectional). FLOPs: the output linear, the kernel and the FFT convolution (≈ 3
    FFTs of 2T points, 15·log2(2T) per channel). Kernel per channel and position: diag, a
    Vandermonde product, 8·c·N; dplr, Cauchy sums at T/2 + 1 frequencies over the full N modes,
    4·N·(c + r)(1 + r), plus C̃ = C(I − Ā^T) by binary powering, 4·N³·log2(T) / T.
    State (recurrent mode): the complex state [d, N/2] as N reals per channel."""
    d = width_of(ins)
    n, c = p.d_state, 2 if p.bidirectional else 1
    t = seq_len(ins[0], ctx)
    if p.mode == "dplr":
        kernel = 4 * n * (c + p.rank) * (1 + p.rank) + 4 * n ** 3 * math.log2(max(t, 2)) / t
    else:
        kernel = 8 * c * n
    flops = 2 * d * 2 * d + kernel * d + 15 * c * d * math.log2(2 * t)
    return Cost(flops=flops, act_bytes=(3 * d + 2 * d) * ctx.dtype_bytes)


def _s4_weights(p: S4Params, ins: list[TensorType]) -> tuple[Weight, ...]:
    """Per channel H = d, N/2 complex modes stored as real pairs, all with S4's own init (HiPPO-
    LegS, log-uniform Δ): log_dt [H] (discretization), A_real and A_imag [H, N/2], B [H, N/2, 2],
    C [c, H, N/2, 2] (c = 2 kernels if bidirectional), D [H], P [rank, H, N/2, 2] (dplr only),
    then the output GLU's `output_linear` Linear(d, 2d)."""
    h, m, c = width_of(ins), p.d_state // 2, 2 if p.bidirectional else 1
    ssm = (Weight("log_dt", (h,), "discretization", "own"), Weight("A_real", (h, m), "ssm", "own"),
           Weight("A_imag", (h, m), "ssm", "own"), Weight("B", (h, m, 2), "ssm", "own"),
           Weight("C", (c, h, m, 2), "ssm", "own"), Weight("D", (h,), "ssm", "own"))
    low_rank = (Weight("P", (p.rank, h, m, 2), "ssm", "own"),) if p.mode == "dplr" else ()
    return ssm + low_rank + dense("output_linear", h, 2 * h, "projection", bias=True)


def _s4_state(p: S4Params, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """The complex state [d, N/2] as N reals per channel (fp32); none when bidirectional."""
    return () if p.bidirectional else (StateTensor("ssm", (width_of(ins), p.d_state)),)



register(OpDef(name="s4", params=S4Params, shape=_s4_shape, cost=_s4_cost,
               summary="S4 / S4D structured state space (HiPPO-LegS init), FFT convolution or recurrence.",
               default_name="mixer", role="mixer", causal=unless_bidirectional, state=_s4_state,
               weights=_s4_weights,
               parallel=replicated_because("its per-channel SSMs read the residual width every rank holds, and output_linear mixes them all; not split", why_context="its convolution-kernel form has no state-passing form in archc")))
