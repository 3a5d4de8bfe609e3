"""One token of RWKV-6's WKV: the recurrence itself."""

from __future__ import annotations

from torch import Tensor

from archc.backends.torch.kernels.common import wide


def wkv6_step(r: Tensor, k: Tensor, v: Tensor, log_w: Tensor, u: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """One token of `wkv6` (r, k, log_w [B, H, K]; v [B, H, V]): the recurrence itself."""
    r, k, v, log_w = wide(r), wide(k), wide(v), wide(log_w)
    kv = k[..., :, None] * v[..., None, :]
    y = (r[..., None, :] @ (wide(u)[..., None] * kv + state))[..., 0, :]
    return y, log_w.exp()[..., None] * state + kv
