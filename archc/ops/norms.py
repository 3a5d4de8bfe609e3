"""Normalization layers: layernorm, rmsnorm, groupnorm; and the residual add fused into the norm
that follows it (`add_rmsnorm`, `add_layernorm`: made by the `fuse_add_norm` pass)."""

from __future__ import annotations

from pydantic import Field, PositiveFloat, PositiveInt

from archc.ir.cost import Cost, CostCtx
from archc.ir.types import TensorType, TupleType
from archc.ir.weights import Weight
from archc.ops.registry import OpDef, Params, ShapeError, divides, register, width_of


class LayerNormParams(Params):
    eps: PositiveFloat = 1e-5
    bias: bool = Field(True, description="learned shift; false for bias-free LayerNorm")
    affine: bool = Field(True, description="learned scale (and shift); false: neither, OLMo's non-parametric "
                                           "LayerNorm")


class RMSNormParams(Params):
    eps: PositiveFloat = 1e-6
    unit_offset: bool = Field(False, description="scale by 1 + weight, the weight initialized to zeros (Gemma's "
                                                  "zero-centred norms, Qwen3-Next)")


class GroupNormParams(Params):
    groups: PositiveInt = Field(description="number of channel groups; must divide the width")
    eps: PositiveFloat = 1e-5


def _norm_shape(p: Params, ins: list[TensorType]) -> TensorType:
    d = width_of(ins)
    if isinstance(p, GroupNormParams):
        divides(p.groups, d, "groups", "the width", arg="groups")
    return ins[0]


def _norm_cost(p: Params, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """~4 FLOPs per element; saves x."""
    d = width_of(ins)
    return Cost(flops=4 * d, act_bytes=d * ctx.dtype_bytes)


def _norm_weights(p: Params, ins: list[TensorType]) -> tuple[Weight, ...]:
    """`weight` [d] (ones; zeros for a `unit_offset` RMSNorm, whose scale is 1 + weight) and, for layernorm with bias and groupnorm, `bias` [d] (zeros); none
    for a non-affine layernorm."""
    d = width_of(ins)
    if isinstance(p, LayerNormParams) and not p.affine:
        return ()
    shift = isinstance(p, GroupNormParams) or (isinstance(p, LayerNormParams) and p.bias)
    scale = (Weight("weight", (d,), "norm", "zeros" if getattr(p, "unit_offset", False) else "ones"),)
    return scale + ((Weight("bias", (d,), "norm", "zeros"),) if shift else ())


register(OpDef(name="layernorm", params=LayerNormParams, shape=_norm_shape, cost=_norm_cost,
               summary="Layer normalization (Ba et al.): scale and optional shift over the width.",
               default_name="norm", role="norm", weights=_norm_weights))
register(OpDef(name="rmsnorm", params=RMSNormParams, shape=_norm_shape, cost=_norm_cost,
               summary="Root-mean-square normalization (Zhang & Sennrich): scale only.", default_name="norm",
               role="norm", weights=_norm_weights))
register(OpDef(name="groupnorm", params=GroupNormParams, shape=_norm_shape, cost=_norm_cost,
               summary="Group normalization over channel groups of each token (scale and shift).",
               default_name="norm", role="norm", weights=_norm_weights))


def _add_norm_shape(p: Params, ins: list[TensorType]) -> TupleType:
    a, b = ins
    if a != b:
        raise ShapeError(f"operands have different types: {a} and {b}", None)
    return TupleType(items=(a, a))


def _add_norm_cost(p: Params, ins: list[TensorType], out: TupleType, ctx: CostCtx) -> Cost:
    """The norm's ~4 FLOPs per element and the add's one; saves the sum."""
    d = width_of(ins)
    return Cost(flops=5 * d, act_bytes=d * ctx.dtype_bytes)


for _norm, _params, _ort in (("rmsnorm", RMSNormParams, "SkipSimplifiedLayerNormalization"),
                             ("layernorm", LayerNormParams, "SkipLayerNormalization")):
    register(OpDef(name=f"add_{_norm}", params=_params, shape=_add_norm_shape, cost=_add_norm_cost,
                   summary=f"A residual add and the `{_norm}` of the sum in one op (onnxruntime's `{_ort}`): "
                           "outputs the normed value and the sum, which goes on down the residual stream "
                           "(made by the `fuse_add_norm` pass).", default_name="norm", role="norm", inputs=("a", "b"), weights=_norm_weights,
                   fuses=("add", _norm), outputs=("norm", "sum")))
