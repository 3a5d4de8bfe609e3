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


def chunk_rows(x: Tensor, chunk: int, value: float = 0.0) -> Tensor:
    """[B, H, T, ·] (or [B, H, T]) → [B·H, T', ·]: one row of tokens per sequence and head, padded
    with `value` to T' a multiple of `chunk` — the layout of the chunk kernels."""
    b, h, t = x.shape[:3]
    pad = -t % chunk
    tail = (0, 0) * (x.dim() - 3) + (0, pad)
    return torch.nn.functional.pad(x, tail, value=value).reshape(b * h, t + pad, *x.shape[3:]).contiguous()


def chunk_cumsum(x: Tensor, chunk: int) -> Tensor:
    """[B·H, T', ·] → the sums along the tokens from each chunk's start (T' a multiple of `chunk`):
    the cumulative log-decays the chunk kernels read, formed in PyTorch so that autograd takes their
    gradient back to the per-token log-decays (a reverse cumulative sum)."""
    rows, t = x.shape[:2]
    return x.reshape(rows, t // chunk, chunk, *x.shape[2:]).cumsum(2).reshape(x.shape).contiguous()


def from_chunk_rows(y: Tensor, batch: int, tokens: int) -> Tensor:
    """[B·H, T', ·] → [B, H, T, ·]: the kernel's output without its padding."""
    return y.reshape(batch, -1, *y.shape[1:])[:, :, :tokens]
