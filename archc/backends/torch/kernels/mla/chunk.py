"""MLA over a whole sequence (training and prefill): keys and values expanded from the latents by
kv_b_proj, as transformers' DeepseekV3Attention, then one SDPA — the fused kernels apply, and the
per-head up-projection is a single matmul over all tokens."""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.layers import sdpa


def expanded_mla(q_nope: Tensor, q_rope: Tensor, latent: Tensor, k_rope: Tensor, w_kv_b: Tensor, d_c: int,
                 scale: float, mask: Tensor | None = None, dropout: float = 0.0) -> Tensor:
    """q_nope [B, H, T, d_C], q_rope [B, H, T, d_R], latent [B, S, r], k_rope [B, S, d_R];
    w_kv_b [H·(d_C + d_v), r] (kv_b_proj's weight); `mask` a boolean [B|1, 1, T, S] of allowed
    pairs, or None for plain causal attention. Returns [B, H, T, d_v]."""
    b, h, _, _ = q_nope.shape
    s = latent.shape[1]
    kv = (latent @ w_kv_b.t()).view(b, s, h, -1).transpose(1, 2)       # [B, H, S, d_C + d_v]
    keys = torch.cat((kv[..., :d_c], k_rope[:, None].expand(-1, h, -1, -1)), -1)
    return sdpa(torch.cat((q_nope, q_rope), -1), keys, kv[..., d_c:], attn_mask=mask, dropout_p=dropout,
                is_causal=mask is None, scale=scale)
