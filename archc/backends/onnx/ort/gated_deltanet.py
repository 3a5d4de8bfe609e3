"""Gated DeltaNet as onnxruntime's operators: the two in-projections, `CausalConvWithState` over
q/k/v (with its silu), the l2 norms of q and k, `LinearAttentionGate` (log α = −exp(A_log) ·
softplus(a + dt_bias), β = σ(b), in fp32), the gated delta rule as `LinearAttention`
(`gated_delta`: S_t = α_t S_{t−1} + β_t k_t ⊗ (v_t − α_t S_{t−1}ᵀ k_t), o_t = q_tᵀ S_t / √K, in
archc's state layout [B, Hv, K, V]), `GatedRMSNorm` (weight · RMSNorm(o) · silu(z) per value
head: the norm before the gate, as this op's and Qwen3-Next's) and the out-projection.

The l2 norm x / √(Σx² + ε) is `RMSNormalization` with ε/K and a scale of 1/√K (x / √(Σx²/K +
ε/K) / √K is the same number); the key heads serve consecutive value heads (LinearAttention's
fewer query heads), the keys expanded to every value head."""

from __future__ import annotations

import math

import numpy as np

from archc.backends.onnx.layers import causal_conv, linear_attention, refuse
from archc.backends.onnx.lower import MS_DOMAIN, LowerCtx, lowers
from archc.ops.registry import REGISTRY


def _l2norm(ctx: LowerCtx, x: str, heads: int, dim: int) -> str:
    from archc.backends.torch.ops.gated_deltanet import L2_EPS

    scale = ctx.constant(f"const.l2norm_scale_{dim}", np.full(dim, 1 / math.sqrt(dim), dtype=np.float32))
    (x,) = ctx.emit("Reshape", [x, ctx.ints(0, 0, heads, dim)])
    (x,) = ctx.emit("RMSNormalization", [x, scale], axis=-1, epsilon=L2_EPS / dim)
    return ctx.emit("Reshape", [x, ctx.ints(0, 0, heads * dim)])[0]


@lowers("ort", "gated_deltanet", refuse=refuse)
def gated_deltanet(ctx: LowerCtx) -> str:
    p = REGISTRY["gated_deltanet"].params(**ctx.params)
    h, hv, k_dim, v_dim = p.heads, p.value_heads, p.head_dim, p.value_dim
    group = hv // h
    x = ctx.ins[0]
    (qkvz,) = ctx.emit("Reshape", [ctx.linear(x, "in_proj_qkvz"), ctx.ints(0, 0, h, -1)])
    q, k, v, z = ctx.emit("Split", [qkvz, ctx.ints(k_dim, k_dim, group * v_dim, group * v_dim)], 4, axis=-1)
    (ba,) = ctx.emit("Reshape", [ctx.linear(x, "in_proj_ba"), ctx.ints(0, 0, h, -1)])
    b, a = ctx.emit("Split", [ba, ctx.ints(group, group)], 2, axis=-1)
    b, a = (ctx.emit("Reshape", [t, ctx.ints(0, 0, hv)])[0] for t in (b, a))
    flat = [ctx.emit("Reshape", [t, ctx.ints(0, 0, -1)])[0] for t in (q, k, v)]
    (mixed,) = ctx.emit("Concat", flat, axis=-1)
    conv_past, rec_past = ctx.past
    conv_present, rec_present = ctx.present
    mixed = causal_conv(ctx, mixed, p.conv_width, p.d_conv, conv_past, conv_present)
    q, k, v = ctx.emit("Split", [mixed, ctx.ints(h * k_dim, h * k_dim, hv * v_dim)], 3, axis=-1)
    q, k = _l2norm(ctx, q, h, k_dim), _l2norm(ctx, k, h, k_dim)
    if group > 1:  # every value head its key head's k
        (k5,) = ctx.emit("Reshape", [k, ctx.ints(0, 0, h, 1, k_dim)])
        (k5,) = ctx.emit("Expand", [k5, ctx.ints(1, 1, 1, group, 1)])
        (k,) = ctx.emit("Reshape", [k5, ctx.ints(0, 0, hv * k_dim)])
    (scale,) = ctx.emit("Neg", [ctx.emit("Exp", [ctx.weight("A_log")])[0]])
    decay, beta = ctx.emit("LinearAttentionGate", [a, ctx.weight("dt_bias"), scale, b], 2, domain=MS_DOMAIN,
                           widths=[hv, hv])
    o, _ = linear_attention(ctx, q, k, v, rec_past, decay, beta, q_heads=h, heads=hv, value_width=v_dim,
                            rule="gated_delta", scale=k_dim ** -0.5, present=rec_present)
    (z,) = ctx.emit("Reshape", [z, ctx.ints(0, 0, hv * v_dim)])
    (y,) = ctx.emit("GatedRMSNorm", [o, ctx.weight("norm.weight"), z], domain=MS_DOMAIN, widths=[hv * v_dim],
                    activation="silu", epsilon=float(p.norm_eps))
    return ctx.linear(y, "out_proj", out=ctx.out)
