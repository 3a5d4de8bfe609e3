"""Norms as the standard ONNX operators that compute them: `rmsnorm` → `RMSNormalization`
(opset 23), `layernorm` → `LayerNormalization` (opset 17), both accumulating in fp32 as the torch
modules do; a fused residual add and norm (`add_rmsnorm`, `add_layernorm`) as `Add` and the norm. onnxruntime runs each as one kernel, where the traced module is five to seven
elementwise nodes (Pow, ReduceMean, Add, Sqrt, Reciprocal, Mul, Mul). An export at an older opset
traces the module instead."""

from __future__ import annotations

import numpy as np

from archc.backends.onnx.lower import LowerCtx, lowers


def _needs(opset: int, what: str):
    def refuse(ctx: LowerCtx) -> str | None:
        have = ctx.services.opset
        return f"{what} is an opset-{opset} operator; this export is opset {have}" if have < opset else None

    return refuse


def rms_scale(ctx: LowerCtx, name: str = "weight", unit_offset: bool | None = None) -> str:
    """The scale an RMSNorm's operator takes: the weight `name`, or 1 + weight for a norm with a
    unit offset (Gemma; an `Add` of two constants, which onnxruntime folds at load)."""
    if unit_offset is None:
        unit_offset = bool(ctx.params.get("unit_offset"))
    w = ctx.weight(name)
    if not unit_offset:
        return w
    one = ctx.constant("const.f32.one", np.array(1.0, dtype=np.float32))
    return ctx.emit("Add", [w, one])[0]


@lowers("onnx", "rmsnorm", refuse=_needs(23, "RMSNormalization"))
def rmsnorm(ctx: LowerCtx) -> str:
    return ctx.emit("RMSNormalization", [ctx.ins[0], rms_scale(ctx)], [ctx.out], axis=-1,
                    epsilon=float(ctx.params["eps"]), stash_type=1)[0]


def layernorm_affine(ctx: LowerCtx) -> list[str]:
    """LayerNormalization's scale and (if any) bias inputs: the node's weights, or a ones
    constant for a non-affine layernorm (the operator's scale is not optional)."""
    if not ctx.params.get("affine", True):
        d = ctx.services.graph.nodes[ctx.node.inputs[0]].type.width
        return [ctx.ones(d)]
    return [ctx.weight("weight")] + ([ctx.weight("bias")] if ctx.params["bias"] else [])


@lowers("onnx", "layernorm", refuse=_needs(17, "LayerNormalization"))
def layernorm(ctx: LowerCtx) -> str:
    scale = layernorm_affine(ctx)
    return ctx.emit("LayerNormalization", [ctx.ins[0], *scale], [ctx.out], axis=-1,
                    epsilon=float(ctx.params["eps"]), stash_type=1)[0]


@lowers("onnx", "add_rmsnorm", refuse=_needs(23, "RMSNormalization"))
def add_rmsnorm(ctx: LowerCtx) -> list[str]:
    """The sum (`Add`) and its norm: standard operators (`--target ort` makes it one
    `SkipSimplifiedLayerNormalization`)."""
    (total,) = ctx.emit("Add", ctx.ins, [f"{ctx.out}#1"])
    norm = ctx.emit("RMSNormalization", [total, rms_scale(ctx)], [f"{ctx.out}#0"], axis=-1,
                    epsilon=float(ctx.params["eps"]), stash_type=1)[0]
    return [norm, total]


@lowers("onnx", "add_layernorm", refuse=_needs(17, "LayerNormalization"))
def add_layernorm(ctx: LowerCtx) -> list[str]:
    (total,) = ctx.emit("Add", ctx.ins, [f"{ctx.out}#1"])
    scale = layernorm_affine(ctx)
    norm = ctx.emit("LayerNormalization", [total, *scale], [f"{ctx.out}#0"], axis=-1,
                    epsilon=float(ctx.params["eps"]), stash_type=1)[0]
    return [norm, total]
