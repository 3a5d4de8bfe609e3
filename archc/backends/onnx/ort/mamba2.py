"""Mamba-2 (SSD) as onnxruntime's operators: the in-projection, `CausalConvWithState` over x/B/C
(with its silu), the state-space recurrence as `LinearAttention` (gated, a scalar decay per
head), the gated RMSNorm and the out-projection — one node set for any number of new tokens.

The SSD recurrence per head h is LinearAttention's gated rule with key B, value Δ·x, query C,
log-decay Δ·A_h and scale 1: S_t = exp(Δ_t A_h) S_{t−1} + B_t ⊗ Δ_t x_t, y_t = C_tᵀ S_t; the
groups sharing B and C are its fewer query heads (each serving consecutive heads, as
`repeat_interleave`), the keys expanded to every head. The decoder keeps the SSM state in the
operator's layout [B, H, N, P] (`layout`; archc_export.json's `axes` [0, 2, 1]) rather than the
torch module's [B, H, P, N], so no transpose of it runs at every step (measured: two of them were
a quarter of the step's kernel time). The output norm is RMSNorm(y · silu(z)) (gate before the
norm), which onnxruntime's `GatedRMSNorm` does not compute (it norms first, then gates): it is
written out (`RMSNormalization` over each group).
"""

from __future__ import annotations

from archc.backends.onnx.layers import causal_conv, linear_attention, refuse
from archc.backends.onnx.lower import Layout, LowerCtx, lowers
from archc.ops.registry import REGISTRY


def _layout(ctx: LowerCtx) -> Layout:
    """conv as declared; ssm [H, P, N] kept as LinearAttention's [H, N, P]."""
    return None, (0, 2, 1)


@lowers("ort", "mamba2", refuse=refuse, layout=_layout)
def mamba2(ctx: LowerCtx) -> str:
    from archc.backends.torch.ops.mamba2 import NORM_EPS

    d = ctx.services.graph.nodes[ctx.node.inputs[0]].type.width
    p = REGISTRY["mamba2"].params(**ctx.params)
    e, n, g, hd, heads = p.inner(d), p.d_state, p.groups, p.head_dim, p.heads_for(d)
    conv_dim = p.conv_width(d)
    zxbcdt = ctx.linear(ctx.ins[0], "in_proj")
    z, xbc, dt = ctx.emit("Split", [zxbcdt, ctx.ints(e, conv_dim, heads)], 3, axis=-1)
    conv_past, ssm_past = ctx.past
    conv_present, ssm_present = ctx.present
    xbc = causal_conv(ctx, xbc, conv_dim, p.d_conv, conv_past, conv_present)
    xs, b, c = ctx.emit("Split", [xbc, ctx.ints(e, g * n, g * n)], 3, axis=-1)
    (dt,) = ctx.emit("Softplus", [ctx.emit("Add", [dt, ctx.weight("dt_bias")])[0]])
    (a,) = ctx.emit("Neg", [ctx.emit("Exp", [ctx.weight("A_log")])[0]])
    (decay,) = ctx.emit("Mul", [dt, a])  # [B, T, H]
    (x4,) = ctx.emit("Reshape", [xs, ctx.ints(0, 0, heads, hd)])
    (v4,) = ctx.emit("Mul", [x4, ctx.emit("Unsqueeze", [dt, ctx.ints(-1)])[0]])
    (v,) = ctx.emit("Reshape", [v4, ctx.ints(0, 0, e)])
    if heads > g:  # every head its group's B (consecutive heads share one)
        (b5,) = ctx.emit("Reshape", [b, ctx.ints(0, 0, g, 1, n)])
        (b5,) = ctx.emit("Expand", [b5, ctx.ints(1, 1, 1, heads // g, 1)])
        (b,) = ctx.emit("Reshape", [b5, ctx.ints(0, 0, heads * n)])
    y, _ = linear_attention(ctx, c, b, v, ssm_past, decay, "", q_heads=g, heads=heads, value_width=hd,
                            rule="gated", scale=1.0, present=ssm_present)
    # y + D·x (D per head, over its P channels), then RMSNorm(y · silu(z)) per group
    (d_rep,) = ctx.emit("Reshape", [ctx.emit("Expand", [ctx.emit("Unsqueeze", [ctx.weight("D"), ctx.ints(1)])[0],
                                                        ctx.ints(heads, hd)])[0], ctx.ints(e)])
    (y,) = ctx.emit("Add", [y, ctx.emit("Mul", [xs, d_rep])[0]])
    (gate,) = ctx.emit("Mul", [z, ctx.emit("Sigmoid", [z])[0]])
    (h,) = ctx.emit("Mul", [y, gate])
    weight = ctx.weight("norm.weight")
    if g == 1:
        (h,) = ctx.emit("RMSNormalization", [h, weight], axis=-1, epsilon=NORM_EPS)
    else:
        (h,) = ctx.emit("Reshape", [h, ctx.ints(0, 0, g, e // g)])
        ones = ctx.ones(e // g)
        (h,) = ctx.emit("RMSNormalization", [h, ones], axis=-1, epsilon=NORM_EPS)
        (h,) = ctx.emit("Mul", [ctx.emit("Reshape", [h, ctx.ints(0, 0, e)])[0], weight])
    return ctx.linear(h, "out_proj", out=ctx.out)

