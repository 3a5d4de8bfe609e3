"""Cutting a sequence axis into fixed-size blocks and back, in a form `torch.export` keeps dynamic.

Blockwise kernels (sliding-window and block-sparse attention, chunked linear attention) pad the
length T to n·b and view it as [n, b]. Written naively (`pad = (-T) % b; x.unflatten(-1, b)`), the
exporter's symbolic shape engine cannot prove the padded length divisible by b, nor that slicing
the padding off again is in bounds, and it fails or fixes T to the traced value. Here

* n = (T + 2b − 1) // b: one atomic floor expression, so n·b is visibly a multiple of b; it also
  leaves at least one spare block, so n ≥ 2 for every T and n is never specialized to 1;
* the padding is removed with `index_select` over `arange(T)`, which needs no bound proof.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def num_blocks(t: int, b: int) -> int:
    """Blocks of size b covering t positions plus at least one spare block."""
    return (t + 2 * b - 1) // b


def to_blocks(x: Tensor, dim: int, b: int, value: float | bool = 0) -> Tensor:
    """Pad axis `dim` of x (length T) to n·b with `value` and split it into [n, b]."""
    dim = dim % x.dim()
    t = x.shape[dim]
    n = num_blocks(t, b)
    pad = [0, 0] * (x.dim() - 1 - dim) + [0, n * b - t]
    return F.pad(x, pad, value=value).unflatten(dim, (n, b))


def from_blocks(x: Tensor, dim: int, t: int) -> Tensor:
    """Merge axes dim, dim+1 ([n, b]) and keep the first t positions."""
    dim = dim % x.dim()
    return x.flatten(dim, dim + 1).index_select(dim, torch.arange(t, device=x.device))
