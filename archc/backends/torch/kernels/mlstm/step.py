"""One token of the mLSTM memory: the recurrence itself."""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.kernels.common import StableState, wide
from archc.backends.torch.kernels.mlstm.chunk import lower_bound


def mlstm_step(q: Tensor, k: Tensor, v: Tensor, log_f: Tensor, i: Tensor, state: StableState,
               eps: float = 1e-6) -> tuple[Tensor, StableState]:
    """One token of `mlstm_scan` (q, k, v [B, H, D]; log_f, i [B, H]): the recurrence itself."""
    q, k, v, log_f, i = wide(q), wide(k), wide(v), wide(log_f), wide(i)
    c, n, m = state
    m_new = torch.maximum(log_f + m, i)
    fg, ig = (log_f + m - m_new).exp(), (i - m_new).exp()
    c = fg[..., None, None] * c + ig[..., None, None] * k[..., :, None] * v[..., None, :]
    n = fg[..., None] * n + ig[..., None] * k
    den = (n * q).sum(-1)
    h = (q[..., None, :] @ c)[..., 0, :] / (torch.maximum(den.abs(), lower_bound(m_new)) + eps)[..., None]
    return h, (c, n, m_new)
