"""Gated convolution (Dauphin et al., 2017): a causal conv producing value and gate, combined by GLU."""

from __future__ import annotations

from pydantic import Field, PositiveInt

from archc.ir.cost import Cost, CostCtx, StateTensor
from archc.ir.types import TensorType
from archc.ops.registry import OpDef, Params, hidden_to_hidden, mixes_causally, register, width_of


class GatedConvParams(Params):
    kernel: PositiveInt = Field(4, description="causal kernel width k")


def _cost(p: GatedConvParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """Conv1d d→2d over k steps with bias: 2d·d·k + 2d; output a ⊗ σ(b)."""
    d = width_of(ins)
    return Cost(2 * d * d * p.kernel + 2 * d, 2 * d * 2 * d * p.kernel, 3 * d * ctx.dtype_bytes)


def _state(p: GatedConvParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """The last k − 1 inputs [d, k − 1], in the model's dtype (none for k = 1)."""
    return (StateTensor("conv", (width_of(ins), p.kernel - 1), "model"),) if p.kernel > 1 else ()


register(OpDef("gated_conv", GatedConvParams, hidden_to_hidden, _cost,
               "Gated convolutional unit: causal conv1d to 2d channels, GLU.", "conv", default_name="conv",
               role="mixer", causal=mixes_causally, state=_state,
               precision=(("conv.*", "conv"),)))
