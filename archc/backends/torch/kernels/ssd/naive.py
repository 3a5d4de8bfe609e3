"""The scalar-decay recurrence token by token: S_t = a_t S_{t−1} + k_tᵀ v_t, y_t = q_t S_t."""

from __future__ import annotations

import torch
from torch import Tensor


def naive_decay_attention(q: Tensor, k: Tensor, v: Tensor, log_a: Tensor,
                          s: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Shapes as `chunked_decay_attention`."""
    if s is None:
        s = q.new_zeros(q.shape[0], q.shape[1], q.shape[3], v.shape[3])
    ys = []
    for t in range(q.shape[2]):
        s = log_a[:, :, t, None, None].exp() * s + k[:, :, t, :, None] * v[:, :, t, None]
        ys.append(q[:, :, t, None] @ s)
    return torch.cat(ys, 2), s
