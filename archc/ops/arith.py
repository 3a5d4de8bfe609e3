"""Elementwise arithmetic on tensors: `x + f(x)` (residual) and `a * b` (gating); and `item`, one
output of a node with several (made by fusion passes, never written in a spec)."""

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


def _elementwise_cost(p: NoParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    return Cost(flops=out.width, act_bytes=0)


for _name, _summary in (("add", "Elementwise sum, written `a + b` (residual connections, parallel branches)."),
                        ("mul", "Elementwise product, written `a * b` (gating).")):
    register(OpDef(name=_name, params=NoParams, shape=_same_shapes, cost=_elementwise_cost, summary=_summary,
                   inputs=("a", "b"), role="arith"))


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
