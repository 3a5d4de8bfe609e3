"""Gated linear attention token by token (Yang et al. 2024, eq. 2 with the gate of §4.1):
S_t = diag(α_t) S_{t−1} + k_tᵀ v_t, o_t = q_t S_t — the reference every other form is tested
against (flash-linear-attention's `naive_recurrent_gla` computes the same)."""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.kernels.gla.step import gla_step


def naive_gla(q: Tensor, k: Tensor, v: Tensor, log_a: Tensor,
              state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """q, k, log α [B, H, T, K] (q already scaled); v [B, H, T, V]; state S_{−1} [B, H, K, V]
    (zeros if None). Returns (o [B, H, T, V], S_{T−1}), fp32 at least."""
    dt = torch.promote_types(q.dtype, torch.float32)
    s = torch.zeros(*k.shape[:2], k.shape[-1], v.shape[-1], dtype=dt, device=q.device) if state is None \
        else state.to(dt)
    out = []
    for t in range(q.shape[2]):
        o, s = gla_step(q[:, :, t].to(dt), k[:, :, t].to(dt), v[:, :, t].to(dt), log_a[:, :, t].to(dt), s)
        out.append(o)
    return torch.stack(out, 2), s
