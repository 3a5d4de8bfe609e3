"""One token of RWKV-4's WKV: the reference recurrence itself."""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.kernels.common import StableState, merge, wide


def wkv4_step(w: Tensor, u: Tensor, k: Tensor, v: Tensor, state: StableState) -> tuple[Tensor, StableState]:
    """One token of `wkv4` (k, v [B, A]): the reference recurrence itself."""
    k, v = wide(k), wide(v)
    mo = torch.maximum(state[2], u + k)
    ea, eb = (state[2] - mo).exp(), (u + k - mo).exp()
    out = (ea * state[0] + eb * v) / (ea * state[1] + eb)
    return out, merge(state, -w, (v, torch.ones_like(v), k))
