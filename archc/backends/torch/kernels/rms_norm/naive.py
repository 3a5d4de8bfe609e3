"""RMSNorm as Zhang & Sennrich (2019) define it and Llama computes it: the mean square in fp32,
the normalized row cast back to the input's dtype, then scaled — the reference the Triton kernel
(`triton.py`) is tested against, and the torch form every RMSNorm module runs."""

from __future__ import annotations

import torch
from torch import Tensor


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """x / rms(x) · weight over the last axis, the mean square in fp32 (as `LlamaRMSNorm`)."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def naive_rms_norm(x: Tensor, weight: Tensor, eps: float, unit_offset: bool = False,
                   residual: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(RMSNorm(s) · (1 + weight if `unit_offset` else weight), s) for s = x + residual (or x):
    the norm and the residual stream it was taken of, as the fused `add_rmsnorm` op returns them."""
    s = x if residual is None else x + residual
    return rms_norm(s, 1 + weight if unit_offset else weight, eps), s
