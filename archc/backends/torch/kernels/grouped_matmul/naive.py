"""A matmul per expert: the reference of the grouped kernel."""

from __future__ import annotations

import torch
from torch import Tensor


def naive_grouped_matmul(x: Tensor, weight: Tensor, offsets: Tensor) -> Tensor:
    """Rows offsets[e]:offsets[e+1] of x [M, K] times weight[e]ᵀ (weight [E, N, K], nn.Linear's
    layout): y [M, N]."""
    bounds = offsets.tolist()
    return torch.cat([x[bounds[e]:bounds[e + 1]] @ weight[e].t() for e in range(weight.shape[0])])
