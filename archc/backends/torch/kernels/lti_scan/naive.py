"""The recurrence token by token: the reference of `lti_scan`."""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.kernels.lti_scan.step import lti_step


def naive_lti_scan(a: Tensor, b: Tensor, c: Tensor, u: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """u [B, H, L] from state x [B, H, N] -> (y [B, H, L], x_L)."""
    ys = []
    for ut in u.unbind(-1):
        y, x = lti_step(a, b, c, ut, x)
        ys.append(y)
    return torch.stack(ys, -1), x
