"""Causal self-attention as onnxruntime's `GroupQueryAttention` (com.microsoft): the q/k/v
projection (one packed MatMul for `attention_packed`), then the operator with the rotary
embedding, the KV cache and the causal mask inside, then the output projection — the graph
onnxruntime-genai's model builder makes for Llama-family models, made here from the IR.

What the operator computes, and so what is lowered to it: causal softmax attention over the
cached keys and values (BNSH, [batch, kv_heads, past + new, head_dim]: archc's KV cache layout)
with grouped heads (H query heads over KV key/value heads), the node's scale (1/√head_dim by
default) and score soft-capping (Gemma 2's `softcap`), q/k RMSNorms before it (Qwen3's
per-head `qk_norm`, OLMo 2's over the width, Gemma 3's 1 + weight: `RMSNormalization` on the
projected q and k), a causal sliding
window as `local_window_size` (the last `window` keys, the query's own included: archc's window,
checked against the operator; the cache it reads is full-length, so a windowed layer's decoder
cache grows where the torch module keeps a ring buffer of the window), and RoPE in the
half-split (GPT-NeoX / Llama) layout from one cos/sin table per model — the table archc's own
`rope_inv_freq` gives, so position interpolation, NTK, Llama 3 and YaRN scaling carry over (YaRN's
temperature folded into the table, as the torch module folds it). The past comes in
holding the tokens so far and the present goes out one step longer: the decoder's interface. Its
sequence lengths come from the decoder's `attention_mask` (`seqlens_k`, `total_sequence_length`),
as the builder computes them.

Refused (traced from the torch module instead, with the reason in the export's report): forward
graphs (no cache), a decoder that keeps an `If` between two forms for its recurrent layers (jamba:
`lower.in_branches`), bidirectional or cross-attention, ALiBi and T5 relative biases
(the operator adds no bias), partial rotary, and head sizes its CPU kernel does not take (a
multiple of 16). Measured limit of the operator: a multi-token step after a past (a continued
prefill) runs with batch 1 only; decoding and a first prefill take any batch.
"""

from __future__ import annotations

import numpy as np

from archc.backends.onnx.lower import MS_DOMAIN, LowerCtx, in_branches, lowers
from archc.backends.onnx.ops.norms import rms_scale
from archc.ops.registry import REGISTRY

#: Positions the rotary tables cover: as far as the export decodes (genai_config's `max_length`
#: for a model without a learned position table is the same 8,192).
ROPE_POSITIONS = 8192


def _dims(ctx: LowerCtx) -> tuple[int, int, int]:
    p = REGISTRY[ctx.node.op].params(**ctx.params)
    d = ctx.services.graph.nodes[ctx.node.inputs[0]].type.width
    return p.heads, p.kv_heads or p.heads, p.head_dim_for(d)


def _refuse(ctx: LowerCtx) -> str | None:
    p = ctx.params
    hd = _dims(ctx)[2]
    pos = (p.get("pos") or {}).get("op")
    if ctx.mode == "forward":
        return "a forward graph: GroupQueryAttention is used where the decoder keeps a KV cache"
    if len(ctx.node.inputs) > 1:
        return "cross-attention: its keys and values read the memory"
    if not p.get("causal"):
        return "bidirectional: GroupQueryAttention is causal"
    if pos not in (None, "rope"):
        return f"{pos} positions: GroupQueryAttention adds no position bias"
    if pos == "rope" and float(p["pos"]["params"].get("fraction", 1.0)) != 1.0:
        return "partial rotary (fraction < 1)"
    if p.get("out_gate"):
        return "the output gate (its queries and gate interleave in q_proj)"
    if p.get("qk_norm") and ctx.services.opset < 23:
        return f"q/k norms as RMSNormalization (opset 23); this export is opset {ctx.services.opset}"
    if hd % 16:
        return f"head_dim {hd}: onnxruntime's CPU GroupQueryAttention takes multiples of 16"
    if len(ctx.past) != 2:
        return "its state is not one key and one value cache"
    return in_branches(ctx)


def _rope_tables(ctx: LowerCtx, hd: int) -> tuple[str, str]:
    """cos and sin [ROPE_POSITIONS, hd/2] of the node's scheme, one pair per model and scheme."""
    import torch

    from archc.backends.torch.ops.positions import rope_attention_factor, rope_cos_sin, rope_inv_freq

    scheme = ctx.params["pos"]["params"]
    # the torch module's own fp32 arithmetic (as transformers'), not exact angles: the two
    # differ by an ulp of the angle, which grows with the position
    cos, sin = rope_cos_sin(torch.arange(ROPE_POSITIONS), rope_inv_freq(scheme, hd), torch.float32,
                            rope_attention_factor(scheme))
    key = "rope." + ".".join(f"{k}_{v}" for k, v in sorted(scheme.items())) + f".hd_{hd}"
    return (ctx.constant(f"{key}.cos", np.ascontiguousarray(cos[:, : hd // 2].numpy())),
            ctx.constant(f"{key}.sin", np.ascontiguousarray(sin[:, : hd // 2].numpy())))


def _full_cache(ctx: LowerCtx) -> bool:
    """A sliding window: archc's torch module keeps a ring buffer of the window; the operator
    reads the last `local_window_size` positions of a full-length cache (as onnxruntime-genai's
    builder exports Mistral), so this decoder's cache grows with the tokens."""
    return bool(ctx.params.get("window"))


def _head_norm(ctx: LowerCtx, x: str, name: str, heads: int, hd: int) -> str:
    """RMSNorm of each head of x [B, T, heads·hd] with the node's `name.weight` [hd] — or of the
    whole width with a weight [heads·hd] (`qk_norm_width`, OLMo 2); 1 + weight with a unit offset."""
    scale = rms_scale(ctx, f"{name}.weight", bool(ctx.params.get("qk_norm_unit_offset")))
    eps = float(ctx.params.get("qk_norm_eps", 1e-6))
    if ctx.params.get("qk_norm_width"):
        return ctx.emit("RMSNormalization", [x, scale], axis=-1, epsilon=eps, stash_type=1)[0]
    (h,) = ctx.emit("Reshape", [x, ctx.ints(0, 0, heads, hd)])
    (h,) = ctx.emit("RMSNormalization", [h, scale], axis=-1, epsilon=eps, stash_type=1)
    return ctx.emit("Reshape", [h, ctx.ints(0, 0, heads * hd)])[0]


@lowers("ort", "attention", "attention_packed", refuse=_refuse, full_cache=_full_cache)
def attention(ctx: LowerCtx) -> str:
    heads, kv, hd = _dims(ctx)
    x = ctx.ins[0]
    if ctx.node.op == "attention_packed":
        qkv = [ctx.linear(x, "qkv_proj"), "", ""]
    else:
        qkv = [ctx.linear(x, "q_proj"), ctx.linear(x, "k_proj"), ctx.linear(x, "v_proj")]
    if ctx.params.get("qk_norm"):  # Qwen3: each head's q and k RMS-normed before the operator rotates them
        if not qkv[1]:
            qkv = ctx.emit("Split", [qkv[0], ctx.ints(heads * hd, kv * hd, kv * hd)], 3, axis=-1)
        qkv[0] = _head_norm(ctx, qkv[0], "q_norm", heads, hd)
        qkv[1] = _head_norm(ctx, qkv[1], "k_norm", kv, hd)
    seqlens, total = ctx.mask_lengths()
    rope = ctx.params.get("pos") is not None
    cos, sin = _rope_tables(ctx, hd) if rope else ("", "")
    past_k, past_v = ctx.past
    present_k, present_v = ctx.present
    (y, _, _) = ctx.emit("GroupQueryAttention", [*qkv, past_k, past_v, seqlens, total, cos, sin],
                         [f"{ctx.out}/attention", present_k, present_v], domain=MS_DOMAIN,
                         widths=[heads * hd, None, None], num_heads=heads,
                         kv_num_heads=kv, scale=float(ctx.params.get("scale") or hd ** -0.5), do_rotary=int(rope),
                         rotary_interleaved=0, **({"softcap": float(cap)} if (cap := ctx.params.get("softcap")) else {}),
                         **({"local_window_size": int(window)} if (window := ctx.params.get("window")) else {}))
    return ctx.linear(y, "o_proj", out=ctx.out)
