"""RWKV-6's WKV token by token: y_t = r_t (diag(u) k_tᵀ v_t + S_{t−1}), S_t = diag(w_t) S_{t−1} + k_tᵀ v_t."""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.kernels.wkv6.step import wkv6_step


def naive_wkv6(r: Tensor, k: Tensor, v: Tensor, log_w: Tensor, u: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    """Shapes as `wkv6`."""
    ys = []
    for t in range(r.shape[2]):
        y, s = wkv6_step(r[:, :, t], k[:, :, t], v[:, :, t], log_w[:, :, t], u, s)
        ys.append(y)
    return torch.stack(ys, 2), s
