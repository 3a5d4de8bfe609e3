"""MLA decoding over the compressed cache (DeepSeek-V2 §2.1.2, "absorbing" W_UK into the query and
W_UV into the output): the score of cached token s for head h is

    (q^C_h W_UK,h) · c_s + q^R_h · k^R_s,   and   o_h = W_UV,h Σ_s p_hs c_s,

so one SDPA runs with the latent as a single key/value head shared by every query head (an MQA of
width r + d_R) and no per-head key or value is formed: the cache read per token is r + d_R numbers."""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.layers import sdpa


def absorbed_mla(q_nope: Tensor, q_rope: Tensor, latent: Tensor, k_rope: Tensor, w_uk: Tensor, w_uv: Tensor,
                 scale: float, mask: Tensor | None = None) -> Tensor:
    """q_nope [B, H, T, d_C], q_rope [B, H, T, d_R] (rotated), latent [B, S, r], k_rope [B, S, d_R]
    (the caches), w_uk [H, d_C, r], w_uv [H, d_v, r]; `mask` a boolean [B|1, 1, T, S] of allowed
    pairs. Returns [B, H, T, d_v]."""
    q_latent = torch.einsum("bhtc,hcr->bhtr", q_nope, w_uk)
    keys = torch.cat((latent, k_rope), -1)[:, None]                       # [B, 1, S, r + d_R]
    o_latent = sdpa(torch.cat((q_latent, q_rope), -1), keys, latent[:, None], attn_mask=mask,
                    enable_gqa=True, scale=scale)                         # [B, H, T, r]
    return torch.einsum("bhtr,hvr->bhtv", o_latent, w_uv)
