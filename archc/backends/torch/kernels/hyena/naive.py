"""Hyena's causal long convolution written out (Poli et al. 2023, eq. 3 with the bias term of the
safari implementation): y_t = Σ_{s≤t} h_{t−s} ⊙ v_s + β ⊙ v_t."""

from __future__ import annotations

import torch
from torch import Tensor


def naive_long_conv(v: Tensor, h: Tensor, beta: Tensor) -> Tensor:
    """v [B, C, T], h [C, ≥T] (lag 0 first), β [C]. Returns y [B, C, T] in v's dtype promoted to fp32."""
    dt = torch.promote_types(v.dtype, torch.float32)
    v, h, beta = v.to(dt), h.to(dt), beta.to(dt)
    t = v.shape[-1]
    out = torch.zeros_like(v)
    for i in range(t):
        lags = h[:, : i + 1].flip(-1)                       # h_{i−s} for s = 0 … i
        out[..., i] = (v[..., : i + 1] * lags).sum(-1) + beta * v[..., i]
    return out
