"""Elementwise arithmetic on tensors: `x + f(x)` (residual), `a * b` (gating; a [B, T, 1] gate
broadcasts over the width, as Qwen2-MoE's sigmoid-gated shared expert), `x * 0.22` (`scale`: a
tensor times a constant, Granite's multipliers); and `item`, one output of a node with several
(made by fusion passes, never written in a spec)."""

from __future__ import annotations

from pydantic import Field, NonNegativeInt

from archc.ir.cost import Cost, CostCtx
from archc.ir.types import TensorType, TupleType
from archc.ops.registry import OpDef, Params, ShapeError, register


class NoParams(Params):
    pass


def _same_shapes(p: NoParams, ins: list[TensorType]) -> TensorType:
    a, b = ins
    if a.shape != b.shape or a.dtype != b.dtype:
        raise ShapeError(f"operands have different types: {a} and {b}",
                         "both sides of `+`/`*` must have the same shape; check the widths of each branch")
    return a


def _gated_shapes(p: NoParams, ins: list[TensorType]) -> TensorType:
    """`a * b`: the same shapes, or one side [..., 1] (a gate per token) broadcast over the
    other's width."""
    a, b = ins
    if a.dtype == b.dtype and a.shape[:-1] == b.shape[:-1] and len(a.shape) == len(b.shape) >= 2:
        if b.shape[-1] == 1:
            return a
        if a.shape[-1] == 1:
            return b
    return _same_shapes(p, ins)


def _elementwise_cost(p: Params, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    return Cost(flops=out.width, act_bytes=0)


register(OpDef(name="add", params=NoParams, shape=_same_shapes, cost=_elementwise_cost,
               summary="Elementwise sum, written `a + b` (residual connections, parallel branches).",
               inputs=("a", "b"), role="arith"))
register(OpDef(name="mul", params=NoParams, shape=_gated_shapes, cost=_elementwise_cost,
               summary="Elementwise product, written `a * b` (gating); a [B, T, 1] side broadcasts over the "
                       "width (a gate per token).", inputs=("a", "b"), role="arith"))


class ScaleParams(Params):
    by: float = Field(description="the constant factor")


def _scale_shape(p: ScaleParams, ins: list[TensorType]) -> TensorType:
    return ins[0]


register(OpDef(name="scale", params=ScaleParams, shape=_scale_shape, cost=_elementwise_cost,
               summary="A tensor times a constant, written `x * 0.22`, `0.22 * x` or `x / 8` (Granite's embedding, "
                       "residual and logit multipliers).", inputs=("x",), role="arith"))


class ItemParams(Params):
    index: NonNegativeInt = Field(description="which output of the node")


def _item_shape(p: ItemParams, ins: list) -> TensorType:
    (t,) = ins
    if not isinstance(t, TupleType):
        raise ShapeError(f"`item` reads one output of a node with several, but its input is a tensor ({t})",
                         "`item` is made by fusion passes; a spec has no use for it")
    if p.index >= len(t.items):
        raise ShapeError(f"output {p.index} of a node with {len(t.items)} outputs", None)
    return t.items[p.index]


def _item_cost(p: ItemParams, ins: list, out: TensorType, ctx: CostCtx) -> Cost:
    """Free: it names a value the node before it computed."""
    return Cost(flops=0, act_bytes=0)


register(OpDef(name="item", params=ItemParams, shape=_item_shape, cost=_item_cost,
               summary="One output of a node with several (a fused residual add + norm's normed value or sum), as "
                       "torch.fx's `getitem`; made by fusion passes.", inputs=("x",), role="arith"))
