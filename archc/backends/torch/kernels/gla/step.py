"""One token of gated linear attention: the recurrence itself."""

from __future__ import annotations

from torch import Tensor

from archc.backends.torch.kernels.common import wide


def gla_step(q: Tensor, k: Tensor, v: Tensor, log_a: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """q, k, log α [B, H, K] (q already scaled, log α ≤ 0); v [B, H, V]; state S [B, H, K, V].
    Returns (o = q S_t [B, H, V], S_t = diag(α) S + kᵀ v), in fp32."""
    q, k, v, log_a = wide(q), wide(k), wide(v), wide(log_a)
    s = log_a.exp()[..., None] * wide(state) + k[..., :, None] * v[..., None, :]
    return (q[..., None, :] @ s)[..., 0, :], s
