"""The gated delta rule token by token: the paper's recurrence (eq. 10 of Yang et al. 2024), the
reference every other form is tested against."""

from __future__ import annotations

import torch
from torch import Tensor


def naive_gated_delta_rule(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
                           state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """q, k [B, H, T, K] (q already scaled), v [B, H, T, V], g = log α ≤ 0 and β [B, H, T], state
    S_{−1} [B, H, K, V] (zeros if None). Returns (o [B, H, T, V], S_{T−1}), in q's dtype and fp32
    at least inside."""
    dt = torch.promote_types(q.dtype, torch.float32)
    q, k, v, g, beta = (x.to(dt) for x in (q, k, v, g, beta))
    b, h, t, dk = k.shape
    s = torch.zeros(b, h, dk, v.shape[-1], dtype=dt, device=q.device) if state is None else state.to(dt)
    out = []
    for i in range(t):
        s = s * g[:, :, i, None, None].exp()                       # α_t S
        kt = k[:, :, i]
        delta = beta[:, :, i, None] * (v[:, :, i] - (kt[..., None] * s).sum(-2))  # β_t (v_t − Sᵀk_t)
        s = s + kt[..., None] * delta[..., None, :]               # + k_t δᵀ
        out.append((q[:, :, i, :, None] * s).sum(-2))              # Sᵀ q_t
    return torch.stack(out, 2), s
