"""Gated convolution (Dauphin et al., 2017): a causal conv producing value and gate, combined by GLU."""

from __future__ import annotations

from pydantic import Field, PositiveInt

from archc.ir.cost import Cost, CostCtx, StateTensor
from archc.ir.types import TensorType
from archc.ir.weights import conv1d
from archc.ops.registry import (
    OpDef,
    Params,
    hidden_to_hidden,
    mixes_causally,
    register,
    replicated_because,
    width_of,
)


class GatedConvParams(Params):
    kernel: PositiveInt = Field(4, description="causal kernel width k")


def _cost(p: GatedConvParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """Conv1d d→2d over k steps: 2·2d·d·k FLOPs; output a ⊗ σ(b)."""
    d = width_of(ins)
    return Cost(flops=2 * d * 2 * d * p.kernel, act_bytes=3 * d * ctx.dtype_bytes)


def _state(p: GatedConvParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """The last k − 1 inputs [d, k − 1], in the model's dtype (none for k = 1)."""
    return (StateTensor("conv", (width_of(ins), p.kernel - 1), "model"),) if p.kernel > 1 else ()


register(OpDef(name="gated_conv", params=GatedConvParams, shape=hidden_to_hidden, cost=_cost,
               summary="Gated convolutional unit: causal conv1d to 2d channels, GLU.", default_name="conv",
               role="mixer", causal=mixes_causally, state=_state,
               weights=lambda p, ins: conv1d("conv", width_of(ins), p.kernel, "conv", out=2 * width_of(ins),
                                             groups=1, init="normal"),
               parallel=replicated_because("one dense convolution d→2d across every channel, small beside the FFNs; not split", context="state")))
