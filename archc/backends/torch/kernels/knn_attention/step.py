"""New tokens of kNN-augmented attention against the cached (normalized) keys and values: the
current segment's earlier tokens are the local context, every earlier segment the memory (exact
top-k over it, as the forward)."""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.kernels.knn_attention.chunk import rows

NEG = float("-inf")


def knn_attention_step(q: Tensor, keys: Tensor, values: Tensor, positions: Tensor, gate: Tensor, segment: int,
                       topk: int, key_valid: Tensor | None = None) -> Tensor:
    """q [B, H, T, hd] at `positions` [T]; keys, values [B, H, C, hd] with the new tokens already
    written; key_valid [B, C] (padding). Returns [B, H, T, hd]."""
    c = keys.shape[2]
    k_pos = torch.arange(c, device=q.device)
    q_seg = torch.div(positions, segment, rounding_mode="floor")
    k_seg = torch.div(k_pos, segment, rounding_mode="floor")
    scores = q @ keys.transpose(-1, -2)                                             # [B, H, T, C]
    ok = torch.ones_like(scores, dtype=torch.bool) if key_valid is None else key_valid[:, None, None, :].expand_as(scores)
    local_ok = ok & ((k_seg[None, :] == q_seg[:, None]) & (k_pos[None, :] <= positions[:, None]))
    memory_ok = ok & (k_seg[None, :] < q_seg[:, None])
    local = torch.nan_to_num(scores.masked_fill(~local_ok, NEG).softmax(-1), nan=0.0) @ values
    memory_scores = scores.masked_fill(~memory_ok, NEG)
    memory_scores = torch.cat((memory_scores, memory_scores.new_full((*memory_scores.shape[:-1], topk), NEG)), -1)
    best = memory_scores.topk(topk, dim=-1)  # always topk candidates: the appended ones are never found
    found = torch.isfinite(best.values)
    weights = torch.nan_to_num(best.values.softmax(-1), nan=0.0)
    picked = rows(values, best.indices.clamp(max=c - 1))                           # [B, H, T, topk, hd]
    memory = (weights[..., None] * picked).sum(-2)
    g = torch.sigmoid(gate)[None, :, None, None] * found.any(-1, keepdim=True).to(q.dtype)
    return local + g * (memory - local)
