"""One token of the Neural Turing Machine's memory, vectorized over heads and locations."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

#: pytorch-ntm's guards: the cosine's denominator and the sharpened weighting's normalizer.
EPS = 1e-16


class NTMHeads(NamedTuple):
    """Head parameters after their activations, heads on axis 1: key [B, H, M], β, g, γ [B, H],
    shift [B, H, 2r + 1] (offsets −r … r)."""

    key: Tensor
    beta: Tensor
    gate: Tensor
    shift: Tensor
    gamma: Tensor


def split_interface(raw: Tensor, width: int, shifts: int, heads: int, extra: int = 0) -> tuple[NTMHeads, Tensor]:
    """A [B, heads·(M + 3 + S + extra)] slice of the interface → (the heads' parameters, the
    rest [B, heads, extra]): β = softplus, g = σ, shift = softmax, γ = 1 + softplus (§3.3.2)."""
    raw = raw.unflatten(-1, (heads, -1))
    key, beta, gate, shift, gamma, rest = raw.split((width, 1, 1, shifts, 1, extra), -1)
    return NTMHeads(key, F.softplus(beta[..., 0]), torch.sigmoid(gate[..., 0]), shift.softmax(-1),
                    1 + F.softplus(gamma[..., 0])), rest


def address(memory: Tensor, h: NTMHeads, previous: Tensor) -> Tensor:
    """The heads' weightings [B, H, N] over memory [B, N, M] from their previous ones [B, H, N]."""
    sim = F.cosine_similarity(h.key[:, :, None, :], memory[:, None], dim=-1, eps=EPS)
    content = (h.beta[..., None] * sim).softmax(-1)
    gated = h.gate[..., None] * content + (1 - h.gate[..., None]) * previous
    r = (h.shift.shape[-1] - 1) // 2
    shifted = sum(h.shift[..., k + r, None] * gated.roll(k, dims=-1) for k in range(-r, r + 1))
    sharp = shifted.pow(h.gamma[..., None])
    return sharp / (sharp.sum(-1, keepdim=True) + EPS)


def ntm_step(memory: Tensor, read_prev: Tensor, write_prev: Tensor, reads: NTMHeads, writes: NTMHeads,
             erase: Tensor, add: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
    """memory [B, N, M], previous weightings [B, R, N] / [B, W, N], the heads, erase and add
    [B, W, M] (erase after its sigmoid). The read heads read the memory before this token's
    writes (pytorch-ntm's order: read heads first). Returns (read vectors [B, R, M], (memory,
    read weightings, write weightings))."""
    w_read = address(memory, reads, read_prev)
    read = w_read @ memory
    w_write = address(memory, writes, write_prev)
    keep = torch.prod(1 - w_write[..., None] * erase[:, :, None, :], dim=1)   # all erasures first …
    memory = memory * keep + w_write.transpose(1, 2) @ add                    # … then every add
    return read, (memory, w_read, w_write)
