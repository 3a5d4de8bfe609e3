"""A dense layer and its activation as onnxruntime's bias-fused activations: `mlp`'s up-projection
and `linear_act` (the `fuse_bias_act` pass) as a `MatMul` and `BiasGelu` (erf GELU) or `FastGelu`
(tanh GELU) with the bias inside the activation's kernel, as onnxruntime's transformer optimizer
fuses BERT's and GPT-2's MLPs; SiLU as `QuickGelu` (x·σ(αx) with α = 1). ReLU, sigmoid and tanh
have no bias-fused operator: `Add` and the standard one."""

from __future__ import annotations

from archc.backends.onnx.lower import MS_DOMAIN, LowerCtx, in_branches, lowers
from archc.ops.registry import REGISTRY

#: activation → (operator, attributes) taking (x, bias) in one kernel
_BIAS_FUSED = {"gelu": ("BiasGelu", {}), "gelu_tanh": ("FastGelu", {})}
#: activation → (operator, attributes) of the activation alone
_PLAIN = {"gelu": ("Gelu", {}), "gelu_tanh": ("Gelu", {"approximate": "tanh"}), "relu": ("Relu", {}),
          "sigmoid": ("Sigmoid", {}), "tanh": ("Tanh", {}), "silu": ("QuickGelu", {"alpha": 1.0})}


def dense_act(ctx: LowerCtx, x: str, layer: str, act: str, width: int, out: str | None = None) -> str:
    """act(`layer`(x)) [B, T, width]: the bias added inside the activation's kernel where
    onnxruntime has one."""
    bias = ctx.bias(layer)
    y = ctx.matmul(x, layer)
    if bias and act in _BIAS_FUSED:
        op, attrs = _BIAS_FUSED[act]
        return ctx.emit(op, [y, bias], [out] if out else 1, domain=MS_DOMAIN, widths=[width], **attrs)[0]
    if bias:
        (y,) = ctx.emit("Add", [y, bias])
    op, attrs = _PLAIN[act]
    return ctx.emit(op, [y], [out] if out else 1, domain=MS_DOMAIN if op == "QuickGelu" else "",
                    widths=[width] if op == "QuickGelu" else None, **attrs)[0]


@lowers("ort", "mlp", "linear_act", refuse=in_branches)
def ffn(ctx: LowerCtx) -> str:
    p = REGISTRY[ctx.node.op].params(**ctx.params)
    if ctx.node.op == "linear_act":
        return dense_act(ctx, ctx.ins[0], "proj", p.act, p.out, out=ctx.out)
    return ctx.linear(dense_act(ctx, ctx.ins[0], "up_proj", p.act, p.hidden), "down_proj", out=ctx.out)
