"""RWKV-7's generalized delta rule token by token (the paper's eq. for the state evolution,
S_t = S_{t−1}(diag(w_t) + a_tᵀ b_t) + v_tᵀ k_t in its [V, K] layout, here transposed to [K, V] as
flash-linear-attention keeps it): the reference every other form is tested against."""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.kernels.rwkv7.step import rwkv7_step


def naive_rwkv7(r: Tensor, log_w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor,
                state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """r, log w, k, a, b [B, H, T, K]; v [B, H, T, V]; state S_{−1} [B, H, K, V] (zeros if None).
    Returns (o [B, H, T, V], S_{T−1}), fp32 at least."""
    dt = torch.promote_types(r.dtype, torch.float32)
    s = torch.zeros(*k.shape[:2], k.shape[-1], v.shape[-1], dtype=dt, device=r.device) if state is None \
        else state.to(dt)
    out = []
    for t in range(r.shape[2]):
        o, s = rwkv7_step(*(x[:, :, t].to(dt) for x in (r, log_w, k, v, a, b)), s)
        out.append(o)
    return torch.stack(out, 2), s
