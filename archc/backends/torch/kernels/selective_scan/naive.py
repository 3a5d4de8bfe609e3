"""Mamba's selective scan token by token (Gu & Dao 2023, Alg. 2): the reference."""

from __future__ import annotations

import torch
from torch import Tensor


def naive_selective_scan(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                         h: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """h_t = exp(Δ_t ⊗ A) ⊙ h_{t−1} + (Δ_t u_t) ⊗ B_t, y_t = h_t · C_t; shapes as `selective_scan`."""
    if h is None:
        h = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])
    ys = []
    for t in range(u.shape[1]):
        h = (dt[:, t, :, None] * A).exp() * h + (dt[:, t] * u[:, t])[..., None] * B[:, t, None]
        ys.append((h * C[:, t, None]).sum(-1))
    return torch.stack(ys, 1), h
