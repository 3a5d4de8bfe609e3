"""Mamba's one-token step as standard ONNX operators (every target): the decode branch of a Mamba
decoder. Measured on mamba-tiny's decode branch (4 layers, with the norms, embedding and head):
188 nodes as the traced step wrote them (29 Transposes), 155 after onnxruntime's optimizations;
135 with this one (onnxruntime folds the weights' transposes, A = −exp(A_log) and the conv
kernel's reshape).

    xs, z = in_proj(x);  window = [conv_past[:, :, 1:], xs];  u = silu(Σ_k window · w + b)
    Δ, B, C = x_proj(u) (Δ through dt_proj, softplus)
    h = exp(Δ A) ⊙ h_past + (Δ u) ⊗ B;  y = h C + D u;  out = out_proj(y · silu(z))

with the state as the torch module declares it — `conv` [B, E, d_conv] (the last d_conv inputs;
the new one is the window) and `ssm` [B, E, N] — so the prefill branch, which stays traced (its
selective scan over many tokens: `LinearAttention` with a head per channel was measured slower,
see `layers.py`), hands the decode branch the same tensors. FalconMamba's and Jamba's Δ/B/C
norms stay traced.
"""

from __future__ import annotations

from archc.backends.onnx.lower import LowerCtx, lowers
from archc.ops.registry import REGISTRY


def _refuse(ctx: LowerCtx) -> str | None:
    if ctx.mode != "decode":
        return "its prefill, a selective scan over many tokens, is traced; its one-token step is lowered"
    if ctx.params.get("norm_dt_bc"):
        return "Δ/B/C norms (FalconMamba, Jamba) are traced"
    return None


@lowers("onnx", "mamba", refuse=_refuse)
def mamba_step(ctx: LowerCtx) -> str:
    d = ctx.services.graph.nodes[ctx.node.inputs[0]].type.width
    p = REGISTRY["mamba"].params(**ctx.params)
    e, n, r, k = p.inner(d), p.d_state, p.dt_rank_for(d), p.d_conv
    conv_past, ssm_past = ctx.past
    conv_present, ssm_present = ctx.present
    xs, z = ctx.emit("Split", [ctx.linear(ctx.ins[0], "in_proj"), ctx.ints(e, e)], 2, axis=-1)  # [B, 1, E]
    # the convolution's window: the last k − 1 inputs, then this one ([B, E, k]: the new state)
    (x_col,) = ctx.emit("Reshape", [xs, ctx.ints(0, e, 1)])
    (carry,) = ctx.emit("Slice", [conv_past, ctx.ints(1), ctx.ints(k), ctx.ints(2)])
    (window,) = ctx.emit("Concat", [carry, x_col], [conv_present], axis=2)
    (kernel,) = ctx.emit("Reshape", [ctx.weight("conv1d.weight"), ctx.ints(e, k)])
    (conv,) = ctx.emit("ReduceSum", [ctx.emit("Mul", [window, kernel])[0], ctx.ints(2)], keepdims=0)  # [B, E]
    if ctx.services.holds(ctx.node, "conv1d.bias"):
        (conv,) = ctx.emit("Add", [conv, ctx.weight("conv1d.bias")])
    (u,) = ctx.emit("Mul", [conv, ctx.emit("Sigmoid", [conv])[0]])
    (u,) = ctx.emit("Unsqueeze", [u, ctx.ints(1)])  # [B, 1, E]
    dt_low, b, c = ctx.emit("Split", [ctx.linear(u, "x_proj"), ctx.ints(r, n, n)], 3, axis=-1)
    (dt,) = ctx.emit("Softplus", [ctx.linear(dt_low, "dt_proj")])  # [B, 1, E]
    # the recurrence, per channel and state: h = exp(Δ A) ⊙ h_past + (Δ u) ⊗ B
    (a,) = ctx.emit("Neg", [ctx.emit("Exp", [ctx.weight("A_log")])[0]])  # [E, N], folded at load
    (dt_col,) = ctx.emit("Reshape", [dt, ctx.ints(0, e, 1)])
    (decay,) = ctx.emit("Exp", [ctx.emit("Mul", [dt_col, a])[0]])  # [B, E, N]
    (dtu,) = ctx.emit("Reshape", [ctx.emit("Mul", [dt, u])[0], ctx.ints(0, e, 1)])
    (h,) = ctx.emit("Add", [ctx.emit("Mul", [decay, ssm_past])[0], ctx.emit("Mul", [dtu, b])[0]], [ssm_present])
    (y,) = ctx.emit("MatMul", [h, ctx.emit("Reshape", [c, ctx.ints(0, n, 1)])[0]])  # [B, E, 1]
    (y,) = ctx.emit("Reshape", [y, ctx.ints(0, 1, e)])
    (y,) = ctx.emit("Add", [y, ctx.emit("Mul", [u, ctx.weight("D")])[0]])
    (gate,) = ctx.emit("Mul", [z, ctx.emit("Sigmoid", [z])[0]])
    return ctx.linear(ctx.emit("Mul", [y, gate])[0], "out_proj", out=ctx.out)
