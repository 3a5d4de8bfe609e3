"""Elementwise arithmetic on tensors: `x + f(x)` (residual) and `a * b` (gating)."""

from __future__ import annotations

from archc.ir.cost import Cost, CostCtx
from archc.ir.types import TensorType
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
    register(OpDef(name=_name, params=NoParams, shape=_same_shapes, cost=_elementwise_cost, summary=_summary, category="arith", kind="arith",
                   inputs=("a", "b"), role="arith"))
