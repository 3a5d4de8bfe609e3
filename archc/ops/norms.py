"""Normalization layers: layernorm, rmsnorm, groupnorm."""

from __future__ import annotations

from pydantic import Field, PositiveFloat, PositiveInt

from archc.ir.cost import Cost, CostCtx
from archc.ir.types import TensorType
from archc.ops.registry import OpDef, Params, divides, register, width_of


class LayerNormParams(Params):
    eps: PositiveFloat = 1e-5
    bias: bool = Field(True, description="learned shift; false for bias-free LayerNorm")


class RMSNormParams(Params):
    eps: PositiveFloat = 1e-6


class GroupNormParams(Params):
    groups: PositiveInt = Field(description="number of channel groups; must divide the width")
    eps: PositiveFloat = 1e-5


def _norm_shape(p: Params, ins: list[TensorType]) -> TensorType:
    d = width_of(ins)
    if isinstance(p, GroupNormParams):
        divides(p.groups, d, "groups", "the width", arg="groups")
    return ins[0]


def _norm_cost(p: Params, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """params = d (scale) + d (shift, when the norm has one); ~4 FLOPs per element; saves x."""
    d = width_of(ins)
    shift = isinstance(p, GroupNormParams) or (isinstance(p, LayerNormParams) and p.bias)
    return Cost(params=d * (2 if shift else 1), flops=4 * d, act_bytes=d * ctx.dtype_bytes)


register(OpDef("layernorm", LayerNormParams, _norm_shape, _norm_cost,
               "Layer normalization (Ba et al.): scale and optional shift over the width.", "norm",
               default_name="norm", role="norm"))
register(OpDef("rmsnorm", RMSNormParams, _norm_shape, _norm_cost,
               "Root-mean-square normalization (Zhang & Sennrich): scale only.", "norm", default_name="norm",
               role="norm"))
register(OpDef("groupnorm", GroupNormParams, _norm_shape, _norm_cost,
               "Group normalization over channel groups of each token (scale and shift).", "norm",
               default_name="norm", role="norm"))
