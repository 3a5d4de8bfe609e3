"""kNN-augmented attention query by query (Wu et al. 2022, §3): query t of segment s attends the
tokens of s up to t (local, causal) and the `topk` keys of segments before s with the largest
inner product (the memory, exact search); the two are mixed by the head's gate σ(g), the local
output alone where the memory is empty."""

from __future__ import annotations

import torch
from torch import Tensor


def naive_knn_attention(q: Tensor, k: Tensor, v: Tensor, gate: Tensor, segment: int, topk: int) -> Tensor:
    """q, k (normalized and scaled as the layer wants them), v [B, H, T, hd]; gate [H] (before its
    sigmoid). Returns [B, H, T, hd]."""
    b, h, t, _ = q.shape
    out = torch.zeros_like(v)
    for bi in range(b):
        for hi in range(h):
            g = torch.sigmoid(gate[hi])
            for i in range(t):
                start = (i // segment) * segment
                local_scores = k[bi, hi, start:i + 1] @ q[bi, hi, i]
                local = local_scores.softmax(0) @ v[bi, hi, start:i + 1]
                if start == 0:
                    out[bi, hi, i] = local
                    continue
                scores = k[bi, hi, :start] @ q[bi, hi, i]
                best = scores.topk(min(topk, start)).indices
                memory = scores[best].softmax(0) @ v[bi, hi, best]
                out[bi, hi, i] = g * memory + (1 - g) * local
    return out
