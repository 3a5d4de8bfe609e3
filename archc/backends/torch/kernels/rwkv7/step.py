"""One token of RWKV-7's generalized delta rule: the recurrence itself."""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.kernels.common import wide


def rwkv7_step(r: Tensor, log_w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor,
               state: Tensor) -> tuple[Tensor, Tensor]:
    """r, log w, k, a, b [B, H, K]; v [B, H, V]; state S [B, H, K, V]. Returns (o = S_tᵀ r [B, H,
    V], S_t = diag(w) S + b (aᵀ S) + k vᵀ) in fp32: the rank-one term reads the state before the
    decay, as RWKV-LM's `state * w + state @ ab + vk` does in its [V, K] layout."""
    r, log_w, k, v, a, b, s = (wide(x) for x in (r, log_w, k, v, a, b, state))
    u = torch.einsum("bhk,bhkv->bhv", a, s)
    s = log_w.exp()[..., None] * s + b[..., :, None] * u[..., None, :] + k[..., :, None] * v[..., None, :]
    return torch.einsum("bhk,bhkv->bhv", r, s), s
