"""Building blocks the direct lowerings share (as `backends/torch/layers.py` for the modules): for
the recurrent mixers' lowerings to onnxruntime's operators, the stateful causal convolution
(`CausalConvWithState`), the linear recurrence (`LinearAttention`) and the refusals.

Both operators take any number of new tokens after a state — a prefill from zeros, a continued
prefill and a one-token step are the same node — so a decoder whose every stateful node lowers
to them is one graph without the `If` between a prefill and a decode form.

What `LinearAttention` computes (its schema, checked against the recurrence written out in
tests/backends/onnx/test_ort_target.py): per key/value head h, with the state S [d_k, d_v]

    gated:        S_t = exp(g_t) ⊙ S_{t−1} + k_t ⊗ v_t
    gated_delta:  S_t = exp(g_t) S_{t−1} + β_t k_t ⊗ (v_t − exp(g_t) S_{t−1}ᵀ k_t)
    o_t = scale · q_tᵀ S_t

with g_t per head [B, T, H] or per key dimension [B, T, H·d_k] (broadcast over d_v), q/k/v
packed [B, T, H·d], fewer query heads than key/value heads each serving consecutive ones
(Mamba-2's groups), and the state [B, H, d_k, d_v] in fp32. Its CPU kernel is fast where d_v is
a head's width (Mamba-2, RetNet, Gated DeltaNet: 4–10 µs a step at the tiny sizes); with
d_v = 1 and a head per channel (Mamba's per-channel, per-state decay) it costs 24 µs a step and
38 ms for 512 tokens a layer (measured, 2 threads), slower than the traced scan — so Mamba is
not lowered to it.
"""

from __future__ import annotations

from archc.backends.onnx.lower import MS_DOMAIN, LowerCtx, in_branches


def refuse(ctx: LowerCtx) -> str | None:
    """The recurrent mixers' refusals: forward graphs carry no state (their scan is traced), and
    inside a hybrid's two forms contrib operators are not used (`in_branches`)."""
    if ctx.mode == "forward":
        return "a forward graph: the operators carry a decoder's state"
    return in_branches(ctx)


def causal_conv(ctx: LowerCtx, x: str, channels: int, kernel: int, past: str, present: str) -> str:
    """silu(depthwise causal conv1d(x)) for x [B, T, C] through the node's `conv1d` ([C, 1, K]
    weight, bias if declared) as `CausalConvWithState`, returning [B, T, C]. archc's state holds
    the last K inputs [B, C, K] (transformers' cache layout; its first column is never read), the
    operator's the last K − 1: the past goes in without its first column and the present is the
    last K of past + x."""
    (xt,) = ctx.emit("Transpose", [x], perm=[0, 2, 1])
    (carry,) = ctx.emit("Slice", [past, ctx.ints(1), ctx.ints(kernel), ctx.ints(2)])
    bias = ctx.weight("conv1d.bias") if ctx.services.holds(ctx.node, "conv1d.bias") else ""
    (y, _) = ctx.emit("CausalConvWithState", [xt, ctx.weight("conv1d.weight"), bias, carry], 2, domain=MS_DOMAIN,
                      activation="silu")
    (window,) = ctx.emit("Concat", [carry, xt], axis=2)
    ctx.emit("Slice", [window, ctx.ints(-kernel), ctx.ints(2 ** 62), ctx.ints(2)], [present])
    return ctx.emit("Transpose", [y], perm=[0, 2, 1], widths=[channels])[0]


def linear_attention(ctx: LowerCtx, q: str, k: str, v: str, state: str, decay: str, beta: str, *,
                     q_heads: int, heads: int, value_width: int, rule: str, scale: float,
                     present: str = "") -> tuple[str, str]:
    """`LinearAttention` over packed q/k/v [B, T, heads·d]: (o [B, T, heads·value_width], the new
    state [B, heads, d_k, d_v], named `present` if given)."""
    outs: int | list[str] = [f"{ctx.out}/linear_attention", present] if present else 2
    o, s = ctx.emit("LinearAttention", [q, k, v, state, decay, beta], outs, domain=MS_DOMAIN,
                    widths=[heads * value_width, None], q_num_heads=q_heads, kv_num_heads=heads, update_rule=rule,
                    scale=float(scale))
    return o, s

