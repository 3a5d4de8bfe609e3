"""The grouped matmul of mixture-of-experts as Triton kernels (`templates/grouped_matmul.py.jinja`),
registered with `torch.library` as `archc::grouped_matmul` with its autograd (dX by the same kernel
reading the weights as stored, dW by `grouped_weight_grad`) and fake implementations. Tested against
`naive.py` (tests/backends/torch/kernels/test_grouped_matmul.py)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.library import triton_op, wrap_triton

from archc.backends.torch.kernels.grouped_matmul.specialize import BLOCK_ROWS, params
from archc.backends.triton.render import render


def tile_map(offsets: Tensor) -> tuple[Tensor, Tensor]:
    """Each row tile's expert and first row, for rows grouped by `offsets` [E + 1] (an expert with
    no rows has no tile)."""
    counts = offsets[1:] - offsets[:-1]
    tiles = (counts + BLOCK_ROWS - 1) // BLOCK_ROWS
    expert = torch.repeat_interleave(torch.arange(len(counts), device=offsets.device), tiles)
    first_tile = torch.cumsum(tiles, 0) - tiles
    start = offsets[:-1][expert] + (torch.arange(len(expert), device=offsets.device) - first_tile[expert]) * BLOCK_ROWS
    return expert.to(torch.int32), start.to(torch.int32)


def _launch(x: Tensor, weight: Tensor, offsets: Tensor, trans: bool) -> Tensor:
    _, a, b = weight.shape
    out, red = (b, a) if trans else (a, b)
    p = params(out, red, trans)
    kernel = render("grouped_matmul", **p).module
    y = torch.empty(x.shape[0], out, dtype=x.dtype, device=x.device)
    expert, start = tile_map(offsets)
    if len(expert):
        wrap_triton(kernel.grouped_matmul)[(len(expert), -(-out // p["BN"]))](
            x.contiguous(), weight.contiguous(), y, expert, start, offsets)
    return y


@triton_op("archc::grouped_matmul", mutates_args=())
def _grouped_matmul(x: Tensor, weight: Tensor, offsets: Tensor) -> Tensor:
    return _launch(x, weight, offsets, False)


@triton_op("archc::grouped_matmul_input_grad", mutates_args=())
def _grouped_matmul_input_grad(dy: Tensor, weight: Tensor, offsets: Tensor) -> Tensor:
    return _launch(dy, weight, offsets, True)


@triton_op("archc::grouped_matmul_weight_grad", mutates_args=())
def _grouped_matmul_weight_grad(x: Tensor, dy: Tensor, offsets: Tensor, experts: int) -> Tensor:
    out, red = dy.shape[1], x.shape[1]
    p = params(out, red, False)
    kernel = render("grouped_matmul", **p).module
    dw = torch.empty(experts, out, red, dtype=x.dtype, device=x.device)
    wrap_triton(kernel.grouped_weight_grad)[(experts, -(-out // p["BN"]), -(-red // p["BK"]))](
        x.contiguous(), dy.contiguous(), dw, offsets)
    return dw


@_grouped_matmul.register_fake
def _(x: Tensor, weight: Tensor, offsets: Tensor) -> Tensor:
    return x.new_empty(x.shape[0], weight.shape[1])


@_grouped_matmul_input_grad.register_fake
def _(dy: Tensor, weight: Tensor, offsets: Tensor) -> Tensor:
    return dy.new_empty(dy.shape[0], weight.shape[2])


@_grouped_matmul_weight_grad.register_fake
def _(x: Tensor, dy: Tensor, offsets: Tensor, experts: int) -> Tensor:
    return x.new_empty(experts, dy.shape[1], x.shape[1])


def _setup(ctx: Any, inputs: tuple, output: Tensor) -> None:
    x, weight, offsets = inputs
    ctx.save_for_backward(x, weight, offsets)


def _backward(ctx: Any, dy: Tensor) -> tuple:
    x, weight, offsets = ctx.saved_tensors
    dy = dy.contiguous()
    dx = _grouped_matmul_input_grad(dy, weight, offsets) if ctx.needs_input_grad[0] else None
    dw = _grouped_matmul_weight_grad(x, dy, offsets, weight.shape[0]) if ctx.needs_input_grad[1] else None
    return dx, dw, None


_grouped_matmul.register_autograd(_backward, setup_context=_setup)


def triton_grouped_matmul(x: Tensor, weight: Tensor, offsets: Tensor) -> Tensor:
    """`naive.naive_grouped_matmul`'s contract in one launch: rows offsets[e]:offsets[e+1] of x
    [M, K] times weight[e]ᵀ (weight [E, N, K]); offsets [E + 1] (int32 or int64)."""
    return _grouped_matmul(x, weight, offsets.to(torch.int32))
