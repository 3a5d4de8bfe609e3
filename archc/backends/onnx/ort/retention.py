"""RetNet's multi-scale retention as onnxruntime's operators: q/k/v/g projections (one MatMul and a
Split for `retention_packed`), the xPos
rotation as `RotaryEmbedding` (interleaved pairs, torchscale's `theta_shift`, from one cos/sin
table per model), the recurrence as `LinearAttention` (gated, log γ_h per head, scale 1: S_t =
γ_h S_{t−1} + k_tᵀ v_t, o_t = q_t S_t — the paper's recurrent form, in archc's state layout
[B, H, d_k, d_v]), the per-head GroupNorm, the swish gate and the out-projection: one node set
for any number of new tokens."""

from __future__ import annotations

import math

import numpy as np

from archc.backends.onnx.layers import linear_attention, refuse
from archc.backends.onnx.lower import MS_DOMAIN, LowerCtx, lowers
from archc.backends.onnx.ort.attention import ROPE_POSITIONS
from archc.ops.registry import REGISTRY


def _xpos_tables(ctx: LowerCtx, dk: int) -> tuple[str, str]:
    """cos and sin [ROPE_POSITIONS, d_k/2] of n·θ_i, in the torch module's fp32 arithmetic."""
    import torch

    from archc.backends.torch.ops.retention import xpos_angles

    angle = torch.arange(ROPE_POSITIONS).float()[:, None] * xpos_angles(dk)
    key = f"xpos.dk_{dk}"
    return (ctx.constant(f"{key}.cos", np.ascontiguousarray(angle.cos().numpy())),
            ctx.constant(f"{key}.sin", np.ascontiguousarray(angle.sin().numpy())))


@lowers("ort", "retention", "retention_packed", refuse=refuse)
def retention(ctx: LowerCtx) -> str:
    import torch

    from archc.backends.torch.ops.retention import EPS, retention_decays

    d = ctx.services.graph.nodes[ctx.node.inputs[0]].type.width
    p = REGISTRY["retention"].params(**ctx.params)
    heads = p.heads
    dk, dv = p.head_dims_for(d)
    x = ctx.ins[0]
    if ctx.node.op == "retention_packed":
        q, k, v, g = ctx.emit("Split", [ctx.linear(x, "qkvg_proj"), ctx.ints(heads * dk, heads * dk, heads * dv,
                                                                              heads * dv)], 4, axis=-1)
    else:
        q, k, v, g = (ctx.linear(x, f"{n}_proj") for n in "qkvg")
    (k,) = ctx.emit("Mul", [k, ctx.constant(f"const.f32.rsqrt_{dk}", np.array(1 / math.sqrt(dk), np.float32))])
    cos, sin = _xpos_tables(ctx, dk)
    (start,) = ctx.emit("Slice", [ctx.positions, ctx.ints(0), ctx.ints(1)])
    q, k = (ctx.emit("RotaryEmbedding", [t, start, cos, sin], domain=MS_DOMAIN, widths=[heads * dk], interleaved=1,
                     num_heads=heads, rotary_embedding_dim=dk)[0] for t in (q, k))
    decays = retention_decays(tuple(p.decay_indices()))
    decay = ctx.per_token("retention.log_decay." + "_".join(map(str, p.decay_indices())),
                          decays.to(torch.float32).numpy())
    o, _ = linear_attention(ctx, q, k, v, ctx.past[0], decay, "", q_heads=heads, heads=heads, value_width=dv,
                            rule="gated", scale=1.0, present=ctx.present[0])
    ones = ctx.ones(dv)
    (o,) = ctx.emit("Reshape", [o, ctx.ints(0, 0, heads, dv)])
    (o,) = ctx.emit("LayerNormalization", [o, ones], axis=-1, epsilon=EPS)
    (o,) = ctx.emit("Reshape", [o, ctx.ints(0, 0, heads * dv)])
    (gate,) = ctx.emit("Mul", [g, ctx.emit("Sigmoid", [g])[0]])
    (h,) = ctx.emit("Mul", [gate, o])
    return ctx.linear(h, "out_proj", out=ctx.out)
