"""Normalization layers: LayerNorm, RMSNorm, GroupNorm over the feature axis; a residual add
fused into the norm after it (`add_rmsnorm`, `add_layernorm`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archc.backends.torch.context import Context
from archc.backends.torch.kernels.rms_norm.naive import rms_norm
from archc.backends.torch.module import OpModule
from archc.backends.torch.registry import implements


@implements("layernorm")
class LayerNorm(OpModule):
    """`F.layer_norm` over the last axis; `weight` ones, `bias` zeros (absent with bias=false;
    neither with affine=false)."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.weight = self.make_parameter("weight") if "weight" in self.declared_weights else None
        self.bias = self.make_parameter("bias") if "bias" in self.declared_weights else None

    def forward(self, x: Tensor, ctx: Context) -> Tensor:
        if kernel := self.triton_kernels.get("layer_norm"):
            return kernel(x, self.weight, self.bias, self.params.eps)[0]
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.params.eps)


@implements("rmsnorm")
class RMSNorm(OpModule):
    """x / rms(x) · weight, computed in fp32 and cast back (Zhang & Sennrich; as Llama); · (1 +
    weight) with `unit_offset` (Gemma)."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.weight = self.make_parameter("weight")

    def forward(self, x: Tensor, ctx: Context) -> Tensor:
        if kernel := self.triton_kernels.get("rms_norm"):
            return kernel(x, self.weight, self.params.eps, self.params.unit_offset)[0]
        return rms_norm(x, norm_scale(self.weight, self.params), self.params.eps)


def norm_scale(weight: Tensor, p) -> Tensor:
    """What an RMSNorm multiplies by: its weight, or 1 + weight with a unit offset."""
    return 1 + weight if getattr(p, "unit_offset", False) else weight


class ScaledRMSNorm(nn.Module):
    """An RMSNorm inside another op's module over the last axis, with a weight the op declared
    (attention's `q_norm` / `k_norm`, Jamba's Δ/B/C norms), scaled by 1 + weight with a unit
    offset (Gemma 3), or by nothing without a weight (FalconMamba's Δ/B/C norms)."""

    def __init__(self, weight: nn.Parameter | None, eps: float, unit_offset: bool = False) -> None:
        super().__init__()
        self.weight = weight
        self.eps = eps
        self.unit_offset = unit_offset

    def forward(self, x: Tensor) -> Tensor:
        if self.weight is None:
            return rms_norm(x, torch.ones((), dtype=x.dtype, device=x.device), self.eps)
        return rms_norm(x, 1 + self.weight if self.unit_offset else self.weight, self.eps)


@implements("add_rmsnorm", "add_layernorm")
class AddNorm(OpModule):
    """`(norm(a + b), a + b)`: the residual add and the norm of the sum in one module, the norm's
    weights under the norm's names. Eager PyTorch runs the same two kernels; the fused op is what
    the ONNX backend exports as onnxruntime's Skip*LayerNormalization."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.weight = self.make_parameter("weight") if "weight" in self.declared_weights else None
        self.bias = self.make_parameter("bias") if "bias" in self.declared_weights else None

    def forward(self, a: Tensor, b: Tensor, ctx: Context) -> tuple[Tensor, Tensor]:
        if kernel := self.triton_kernels.get("rms_norm"):  # the residual add and the norm in one kernel
            return kernel(a, self.weight, self.params.eps, self.params.unit_offset, b)
        if kernel := self.triton_kernels.get("layer_norm"):
            return kernel(a, self.weight, self.bias, self.params.eps, b)
        s = a + b
        if self.op == "add_rmsnorm":
            return rms_norm(s, norm_scale(self.weight, self.params), self.params.eps), s
        return F.layer_norm(s, (s.shape[-1],), self.weight, self.bias, self.params.eps), s


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
