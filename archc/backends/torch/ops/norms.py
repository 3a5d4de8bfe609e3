"""Normalization layers: LayerNorm, RMSNorm, GroupNorm over the feature axis."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from archc.backends.torch.context import Context
from archc.backends.torch.module import OpModule
from archc.backends.torch.registry import implements


@implements("layernorm")
class LayerNorm(OpModule):
    """`F.layer_norm` over the last axis; `weight` ones, `bias` zeros (absent with bias=false)."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.weight = self.make_parameter("weight")
        self.bias = self.make_parameter("bias") if p.bias else None

    def forward(self, x: Tensor, ctx: Context) -> Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.params.eps)


@implements("rmsnorm")
class RMSNorm(OpModule):
    """x / rms(x) · weight, computed in fp32 and cast back (Zhang & Sennrich; as Llama)."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.weight = self.make_parameter("weight")

    def forward(self, x: Tensor, ctx: Context) -> Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.params.eps)
        return self.weight * h.to(x.dtype)


@implements("groupnorm")
class GroupNorm(OpModule):
    """`F.group_norm` per token: the d features split into `groups` normalized groups (RetNet's
    per-head normalization); affine `weight`/`bias` per feature."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.weight, self.bias = self.make_parameter("weight"), self.make_parameter("bias")

    def forward(self, x: Tensor, ctx: Context) -> Tensor:
        shape = x.shape
        y = F.group_norm(x.reshape(-1, shape[-1]), self.params.groups, self.weight, self.bias, self.params.eps)
        return y.reshape(shape)
