"""LayerNorm (Ba et al., 2016) as PyTorch computes it (`F.layer_norm`: the biased variance, the
affine scale and shift optional): the reference the Triton kernel (`triton.py`) is tested
against, and the torch form every LayerNorm module runs."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def naive_layer_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float,
                     residual: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(LayerNorm(s), s) for s = x + residual (or x), as the fused `add_layernorm` op returns them."""
    s = x if residual is None else x + residual
    return F.layer_norm(s, (s.shape[-1],), weight, bias, eps), s
