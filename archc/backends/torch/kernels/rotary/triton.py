"""Rotary position embedding as a Triton kernel, rendered per head width, rotated width and table
layout from `archc/backends/triton/templates/rotary.py.jinja` and registered with `torch.library`
as `archc::rotary` (its backward, the transposed rotation, is the same kernel: `archc::rotary_backward`;
fake implementations included). Tested against `naive.py` (tests/backends/torch/kernels/test_rotary.py)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.library import triton_op, wrap_triton

from archc.backends.torch.kernels.launch import as_rows
from archc.backends.torch.kernels.rotary.specialize import params
from archc.backends.triton.render import render


def _launch(x: Tensor, cos: Tensor, sin: Tensor, backward: bool) -> Tensor:
    rows = as_rows(x)
    out = torch.empty_like(rows)
    per_batch = cos.dim() == 4
    k = render("rotary", **params(x.shape[-1], cos.shape[-1], per_batch)).module
    wrap_triton(k.rotary)[(rows.shape[0],)](rows, cos.contiguous(), sin.contiguous(), out, x.shape[1], x.shape[2],
                                             BACKWARD=backward)
    return out.view(x.shape)


@triton_op("archc::rotary", mutates_args=())
def _rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    return _launch(x, cos, sin, False)


@triton_op("archc::rotary_backward", mutates_args=())
def _rotary_backward(dy: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    return _launch(dy, cos, sin, True)


@_rotary.register_fake
def _(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@_rotary_backward.register_fake
def _(dy: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    return torch.empty_like(dy, memory_format=torch.contiguous_format)


def _setup(ctx: Any, inputs: tuple, output: Tensor) -> None:
    _, cos, sin = inputs
    ctx.save_for_backward(cos, sin)


def _backward(ctx: Any, dy: Tensor) -> tuple:
    cos, sin = ctx.saved_tensors
    return _rotary_backward(dy, cos, sin), None, None


_rotary.register_autograd(_backward, setup_context=_setup)


def triton_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """`naive.apply_rope`'s contract on the kernel: x [B, H, T, hd] rotated by cos/sin [T, rot]
    (or [B, 1, T, rot])."""
    return _rotary(x, cos, sin)
