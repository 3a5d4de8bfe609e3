"""Building blocks several mixers share: the causal depthwise convolution with its decoding
window (Mamba, Mamba-2, xLSTM, Gated DeltaNet), its init, Δ's bias init, and zeroing padded
positions before a recurrence."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archc.backends.torch.context import Context
from archc.backends.torch.init import Init


def causal_depthwise_conv(x: Tensor, conv: nn.Conv1d, prev: Tensor | None) -> tuple[Tensor, Tensor]:
    """Causal depthwise convolution of x [B, C, T] whose left context is `prev` [B, C, k] (the
    last k inputs before x; zeros if None). Returns (y [B, C, T], the last k inputs after x)."""
    k = conv.kernel_size[0]
    window = F.pad(x, (k - 1, 0)) if prev is None else torch.cat((prev[:, :, 1:].to(x.dtype), x), dim=2)
    y = F.conv1d(window, conv.weight, conv.bias, groups=conv.groups)
    if prev is None:
        window = F.pad(x, (k, 0))
    return y, window[:, :, -k:]


def init_conv(conv: nn.Conv1d, init: Init) -> None:
    """PyTorch's default Conv1d init, U(±1/√fan_in) for weight and bias, as `mamba_ssm` keeps it
    (fan_in = kernel for a depthwise conv), drawn from the seeded generator."""
    bound = 1 / math.sqrt(conv.weight[0].numel())
    init.uniform_(conv.weight, -bound, bound)
    if conv.bias is not None:
        init.uniform_(conv.bias, -bound, bound)


def init_fan_in(linear: nn.Linear, init: Init) -> None:
    """PyTorch's default Linear weight init, U(±1/√fan_in) (kaiming_uniform with a = √5), drawn
    from the seeded generator; the bias (if any) is left to the declared init. The projections
    `mamba_ssm` leaves at PyTorch's default take this (N(0, 0.02) is 2.5–3.6× smaller at Mamba's
    widths)."""
    bound = 1 / math.sqrt(linear.in_features)
    init.uniform_(linear.weight, -bound, bound)


def init_dt_bias(bias: Tensor, init: Init, dt_min: float = 0.001, dt_max: float = 0.1, floor: float = 1e-4) -> None:
    """Δ's bias so that softplus(bias) is log-uniform in [dt_min, dt_max] (`mamba_ssm`), via the
    inverse softplus dt + log(−expm1(−dt))."""
    u = torch.empty_like(bias, dtype=torch.float32)
    init.uniform_(u, 0.0, 1.0)
    dt = (u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).exp().clamp(min=floor)
    with torch.no_grad():
        bias.copy_(dt + torch.log(-torch.expm1(-dt)))


def mask_padding(x: Tensor, ctx: Context | None) -> Tensor:
    """Zero the padded positions (transformers' `apply_mask_to_padding_states`)."""
    if ctx is None or ctx.attention_mask is None:
        return x
    return x * ctx.attention_mask[..., None].to(x.dtype)


def sdpa(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None, dropout_p: float = 0.0,
         is_causal: bool = False, enable_gqa: bool = False, scale: float | None = None,
         softcap: float | None = None) -> Tensor:
    """`F.scaled_dot_product_attention`, with a boolean mask expanded to [..., L, S] under export:
    torch.onnx emits ONNX's `Attention` (opset 23), whose onnxruntime CPU kernel refuses a mask
    broadcast along the queries (a key-padding mask [B, 1, 1, S]) although the operator allows it.
    With `softcap` (Gemma 2) the scores are capped, softcap·tanh(s / softcap), before the mask and
    the softmax: written out (`softcapped_attention`), as no fused kernel takes it."""
    if softcap is not None:
        return softcapped_attention(q, k, v, attn_mask, dropout_p, is_causal, scale, softcap)
    if attn_mask is not None and torch.compiler.is_exporting():
        attn_mask = attn_mask.expand(*attn_mask.shape[:-2], q.shape[-2], k.shape[-2])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                                          enable_gqa=enable_gqa, scale=scale)


def softcapped_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, dropout_p: float,
                         is_causal: bool, scale: float | None, softcap: float) -> Tensor:
    """softmax(cap(q·kᵀ·scale) + mask)·v with cap(s) = softcap·tanh(s / softcap), the softmax in
    fp32 (as Gemma 2's reference); k, v may have fewer heads than q (grouped: each serves an equal
    group of query heads)."""
    groups = q.shape[-3] // k.shape[-3]
    if groups > 1:
        k, v = k.repeat_interleave(groups, dim=-3), v.repeat_interleave(groups, dim=-3)
    s = torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5 if scale is None else scale)
    s = torch.tanh(s / softcap) * softcap
    if is_causal:
        attn_mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril(k.shape[-2] - q.shape[-2])
    if attn_mask is not None:
        s = s.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else s + attn_mask
    p = s.float().softmax(-1).to(q.dtype)
    if dropout_p:
        p = F.dropout(p, dropout_p)
    return torch.matmul(p, v)


def blockwise_sdpa(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, dropout_p: float = 0.0,
                   scale: float | None = None, softcap: float | None = None) -> Tensor:
    """Attention within blocks: q [B, H, n, L, hd] against k, v [B, H, n, S, hd] under a boolean
    mask broadcastable to [B, H, n, L, S], as one 4-D `scaled_dot_product_attention` over
    [B, H·n, ·, hd] — the layout torch's ONNX exporter translates (it takes 4-D inputs only)."""
    b, h, n = q.shape[:3]
    mask = mask.expand(b, h, n, *mask.shape[3:]).flatten(1, 2)
    out = sdpa(q.flatten(1, 2), k.flatten(1, 2), v.flatten(1, 2), attn_mask=mask, dropout_p=dropout_p,
               scale=scale, softcap=softcap)
    return out.unflatten(1, (h, n))
