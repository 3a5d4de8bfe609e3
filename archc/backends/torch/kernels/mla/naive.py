"""MLA token by token (DeepSeek-V2, eqs. 9–19): for each query, every earlier token's key
k_s,h = [W_UK,h c_s | k^R_s] and value v_s,h = W_UV,h c_s are expanded from its latent, scored,
softmaxed and summed — the reference the other forms are tested against."""

from __future__ import annotations

import torch
from torch import Tensor


def naive_mla(q_nope: Tensor, q_rope: Tensor, latent: Tensor, k_rope: Tensor, w_uk: Tensor, w_uv: Tensor,
              scale: float, valid: Tensor | None = None) -> Tensor:
    """q_nope [B, H, T, d_C], q_rope [B, H, T, d_R] (rotated), latent [B, T, r], k_rope [B, T, d_R]
    (rotated), w_uk [H, d_C, r], w_uv [H, d_v, r]; query t attends tokens s ≤ t (and `valid`
    [B, T] ones). Returns [B, H, T, d_v]."""
    b, h, t, _ = q_nope.shape
    out = torch.zeros(b, h, t, w_uv.shape[1], dtype=q_nope.dtype, device=q_nope.device)
    for i in range(t):
        keys = torch.cat((torch.einsum("hcr,bsr->bhsc", w_uk, latent[:, : i + 1]),
                          k_rope[:, None, : i + 1].expand(-1, h, -1, -1)), -1)       # [B, H, i+1, d_C + d_R]
        values = torch.einsum("hvr,bsr->bhsv", w_uv, latent[:, : i + 1])
        query = torch.cat((q_nope[:, :, i], q_rope[:, :, i]), -1)                    # [B, H, d_C + d_R]
        scores = torch.einsum("bhd,bhsd->bhs", query, keys) * scale
        if valid is not None:
            scores = scores.masked_fill(~valid[:, None, : i + 1], float("-inf"))
        out[:, :, i] = torch.einsum("bhs,bhsv->bhv", scores.softmax(-1), values)
    return out
