"""What the Triton kernels' bindings share: rows laid out for a row-wise kernel, and how many
programs a reduction over rows gets."""

from __future__ import annotations

import torch
from torch import Tensor


def as_rows(x: Tensor) -> Tensor:
    """x as contiguous rows of its last axis [R, N] (a view where it already is one)."""
    return x.reshape(-1, x.shape[-1]).contiguous()


def row_programs(n: int, device: torch.device) -> int:
    """Programs for a kernel that reduces over rows (a norm's dw): enough to fill a GPU (4 per SM),
    each over ⌈n / programs⌉ rows; few in Triton's interpreter, where a program is a Python loop."""
    if device.type == "cuda":
        return max(1, min(n, 4 * torch.cuda.get_device_properties(device).multi_processor_count))
    return max(1, min(n, 4))
