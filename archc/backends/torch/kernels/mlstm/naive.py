"""The mLSTM memory token by token (Beck et al. 2024, eqs. 19-27, max-stabilized)."""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.kernels.common import NEG, StableState
from archc.backends.torch.kernels.mlstm.step import mlstm_step


def naive_mlstm(q: Tensor, k: Tensor, v: Tensor, log_f: Tensor, i: Tensor,
                state: StableState | None = None) -> tuple[Tensor, StableState]:
    """Shapes as `mlstm_scan`."""
    b, h, _, d = q.shape
    if state is None:
        dt = torch.promote_types(q.dtype, torch.float32)
        state = (q.new_zeros(b, h, d, d, dtype=dt), q.new_zeros(b, h, d, dtype=dt),
                 torch.full((b, h), NEG, dtype=dt, device=q.device))
    out = []
    for t in range(q.shape[2]):
        y, state = mlstm_step(q[:, :, t], k[:, :, t], v[:, :, t], log_f[:, :, t], i[:, :, t], state)
        out.append(y)
    return torch.stack(out, 2), state
