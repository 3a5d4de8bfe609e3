"""A residual add and its norm as onnxruntime's fused normalizations: `add_rmsnorm` →
`SkipSimplifiedLayerNormalization`, `add_layernorm` → `SkipLayerNormalization`; their
`input_skip_bias_sum` output is the residual sum. Each computes in fp32 what the torch module
computes (x / √(mean x² + ε) · w; Ba et al.'s layer norm), so the export is checked against it
as every graph is (`archc export --check`). The plain norms are standard ONNX operators
(`archc/backends/onnx/ops/norms.py`)."""

from __future__ import annotations

from archc.backends.onnx.lower import MS_DOMAIN, LowerCtx, in_branches, lowers
from archc.backends.onnx.ops.norms import layernorm_affine, rms_scale


def _width(ctx: LowerCtx) -> int:
    return ctx.services.graph.nodes[ctx.node.inputs[0]].type.width


@lowers("ort", "add_rmsnorm", refuse=in_branches)
def add_rmsnorm(ctx: LowerCtx) -> list[str]:
    """Outputs: the normed sum, and the sum itself (`input_skip_bias_sum`)."""
    a, b = ctx.ins
    d = _width(ctx)
    norm, _, _, total = ctx.emit("SkipSimplifiedLayerNormalization", [a, b, rms_scale(ctx)],
                                 [f"{ctx.out}#0", "", "", f"{ctx.out}#1"], domain=MS_DOMAIN,
                                 widths=[d, None, None, d], epsilon=float(ctx.params["eps"]))
    return [norm, total]


@lowers("ort", "add_layernorm", refuse=in_branches)
def add_layernorm(ctx: LowerCtx) -> list[str]:
    a, b = ctx.ins
    scale = layernorm_affine(ctx)
    d = _width(ctx)
    norm, _, _, total = ctx.emit("SkipLayerNormalization", [a, b, *scale], [f"{ctx.out}#0", "", "", f"{ctx.out}#1"],
                                 domain=MS_DOMAIN, widths=[d, None, None, d], epsilon=float(ctx.params["eps"]))
    return [norm, total]
