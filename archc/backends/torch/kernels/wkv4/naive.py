"""RWKV-4's WKV token by token (the reference CPU kernel's recurrence)."""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.kernels.common import NEG, StableState
from archc.backends.torch.kernels.wkv4.step import wkv4_step


def naive_wkv4(w: Tensor, u: Tensor, k: Tensor, v: Tensor,
               state: StableState | None = None) -> tuple[Tensor, StableState]:
    """Shapes as `wkv4`."""
    if state is None:
        zero = k.new_zeros(k.shape[0], k.shape[2]).float()
        state = (zero, zero, torch.full_like(zero, NEG))
    out = []
    for t in range(k.shape[1]):
        y, state = wkv4_step(w, u, k[:, t], v[:, t], state)
        out.append(y)
    return torch.stack(out, 1), state
