"""Rotary position embedding as RoFormer defines it and GPT-NeoX / Llama lay it out (the first
rot_dim features of a head rotated in pairs (i, i + rot_dim/2), the rest passed through): the
reference the Triton kernel (`triton.py`) is tested against, and the torch form attention runs."""

from __future__ import annotations

import torch
from torch import Tensor


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the first rot_dim features of x [B, H, T, hd] by the tables cos/sin [T, rot_dim]
    (or [B, 1, T, rot_dim]); the rest pass through (partial rotary)."""
    rot = cos.shape[-1]
    if rot == x.shape[-1]:
        return x * cos + _rotate_half(x) * sin
    xr, xp = x[..., :rot], x[..., rot:]
    return torch.cat((xr * cos + _rotate_half(xr) * sin, xp), dim=-1)
