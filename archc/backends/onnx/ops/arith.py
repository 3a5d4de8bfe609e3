"""The IR's arithmetic as ONNX operators: `add` → `Add`, `mul` → `Mul` (which broadcasts a
per-token gate), `scale` → `Mul` by an fp32 scalar constant; `item` names one output
of a node with several and makes no ONNX node."""

from __future__ import annotations

from typing import Any

import numpy as np

from archc.backends.onnx.lower import LowerCtx, lowers


@lowers("onnx", "add")
def add(ctx: LowerCtx) -> str:
    return ctx.emit("Add", ctx.ins, [ctx.out])[0]


@lowers("onnx", "mul")
def mul(ctx: LowerCtx) -> str:
    return ctx.emit("Mul", ctx.ins, [ctx.out])[0]


@lowers("onnx", "scale")
def scale(ctx: LowerCtx) -> str:
    by = ctx.constant(f"const.f32.{ctx.params['by']!r}", np.array(ctx.params["by"], dtype=np.float32))
    return ctx.emit("Mul", [ctx.ins[0], by], [ctx.out])[0]


@lowers("onnx", "item")
def item(ctx: LowerCtx) -> Any:
    return ctx.ins[0][ctx.params["index"]]
