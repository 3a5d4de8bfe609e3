"""ARMT's associative memory token by token: each token reads the memory of the finished segments;
its write (the delta rule against that same memory) is held until its segment ends."""

from __future__ import annotations

import torch
from torch import Tensor


def naive_associative(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, segment: int, eps: float,
                      keep: Tensor | None = None) -> Tensor:
    """q, k [B, T, F] (φ applied), v [B, T, d], β [B, T]; keep [B, T] (padding writes nothing).
    Returns the reads [B, T, d]."""
    b, t, f = q.shape
    out = torch.zeros(b, t, v.shape[-1], dtype=q.dtype)
    for bi in range(b):
        a, z = torch.zeros(f, v.shape[-1], dtype=q.dtype), torch.zeros(f, dtype=q.dtype)
        da, dz = torch.zeros_like(a), torch.zeros_like(z)
        for i in range(t):
            out[bi, i] = (q[bi, i] @ a) / (z @ q[bi, i] + eps)
            if keep is None or bool(keep[bi, i]):
                ki = k[bi, i]
                previous = (ki @ a) / (z @ ki + eps)
                gamma = ((1 - (z @ ki) / (ki @ ki)).clamp(0, 1) if float((ki @ ki).detach()) > 0 else ki.new_zeros(())).detach()
                da = da + beta[bi, i] * torch.outer(ki, v[bi, i] - previous)
                dz = dz + gamma * ki
            if i % segment == segment - 1:
                a, z, da, dz = a + da, z + dz, torch.zeros_like(da), torch.zeros_like(dz)
    return out
