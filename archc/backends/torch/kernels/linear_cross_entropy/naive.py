"""The head and its loss as every torch build computes them: the logits, then PyTorch's
cross-entropy (the reference of the fused kernel)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def naive_linear_cross_entropy(hidden: Tensor, weight: Tensor, bias: Tensor | None, labels: Tensor,
                               ignore_index: int = -100, softcap: float | None = None) -> Tensor:
    """Σ over the rows whose label is not `ignore_index` of −log softmax(logits)[label], with
    logits = hidden · weightᵀ (+ bias), soft-capped (cap · tanh(x / cap)) when `softcap` is set;
    hidden [N, d], weight [V, d], labels [N]. The sum: the caller divides (a mean, or Trainer's
    `num_items_in_batch`)."""
    logits = F.linear(hidden, weight, bias).float()
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
