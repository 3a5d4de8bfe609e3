"""The GLU gating as Triton kernels, rendered per hidden width, activation and layout from
`archc/backends/triton/templates/glu.py.jinja` and registered with `torch.library`:
`archc::glu`, `archc::glu_packed` and their backwards (autograd and fake implementations
included). The backward recomputes the activation instead of keeping it: the activations kept
for backward are the projections' outputs only. Tested against `naive.py`
(tests/backends/torch/kernels/test_glu.py)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.library import triton_op, wrap_triton

from archc.backends.torch.kernels.glu.specialize import params
from archc.backends.torch.kernels.launch import as_rows
from archc.backends.triton.render import render


def _kernels(hidden: int, act: str, packed: bool) -> Any:
    return render("glu", **params(hidden, act, packed)).module


def _grid(n: int, hidden: int, act: str, packed: bool) -> tuple[Any, tuple[int, int]]:
    p = params(hidden, act, packed)
    return _kernels(hidden, act, packed), (n, -(-hidden // p["BLOCK"]))


@triton_op("archc::glu", mutates_args=())
def _glu(gate: Tensor, up: Tensor, act: str) -> Tensor:
    g, u = as_rows(gate), as_rows(up)
    y = torch.empty_like(g)
    k, grid = _grid(g.shape[0], g.shape[1], act, False)
    wrap_triton(k.glu_forward)[grid](g, u, y)
    return y.view(gate.shape)


@triton_op("archc::glu_backward", mutates_args=())
def _glu_backward(dy: Tensor, gate: Tensor, up: Tensor, act: str) -> tuple[Tensor, Tensor]:
    g, u, d = as_rows(gate), as_rows(up), as_rows(dy)
    dg, du = torch.empty_like(g), torch.empty_like(u)
    k, grid = _grid(g.shape[0], g.shape[1], act, False)
    wrap_triton(k.glu_backward)[grid](d, g, u, dg, du)
    return dg.view(gate.shape), du.view(up.shape)


@triton_op("archc::glu_packed", mutates_args=())
def _glu_packed(gate_up: Tensor, act: str) -> Tensor:
    gu = as_rows(gate_up)
    hidden = gu.shape[1] // 2
    y = gu.new_empty(gu.shape[0], hidden)
    k, grid = _grid(gu.shape[0], hidden, act, True)
    wrap_triton(k.glu_forward)[grid](gu, y)
    return y.view(*gate_up.shape[:-1], hidden)


@triton_op("archc::glu_packed_backward", mutates_args=())
def _glu_packed_backward(dy: Tensor, gate_up: Tensor, act: str) -> Tensor:
    gu, d = as_rows(gate_up), as_rows(dy)
    dgu = torch.empty_like(gu)
    k, grid = _grid(gu.shape[0], gu.shape[1] // 2, act, True)
    wrap_triton(k.glu_backward)[grid](d, gu, dgu)
    return dgu.view(gate_up.shape)


@_glu.register_fake
def _(gate: Tensor, up: Tensor, act: str) -> Tensor:
    return torch.empty_like(gate)


@_glu_backward.register_fake
def _(dy: Tensor, gate: Tensor, up: Tensor, act: str) -> tuple[Tensor, Tensor]:
    return torch.empty_like(gate), torch.empty_like(up)


@_glu_packed.register_fake
def _(gate_up: Tensor, act: str) -> Tensor:
    return gate_up.new_empty(*gate_up.shape[:-1], gate_up.shape[-1] // 2)


@_glu_packed_backward.register_fake
def _(dy: Tensor, gate_up: Tensor, act: str) -> Tensor:
    return torch.empty_like(gate_up)


def _setup_glu(ctx: Any, inputs: tuple, output: Tensor) -> None:
    gate, up, ctx.act = inputs
    ctx.save_for_backward(gate, up)


def _backward_glu(ctx: Any, dy: Tensor) -> tuple:
    gate, up = ctx.saved_tensors
    dg, du = _glu_backward(dy, gate, up, ctx.act)
    return dg, du, None


def _setup_packed(ctx: Any, inputs: tuple, output: Tensor) -> None:
    gate_up, ctx.act = inputs
    ctx.save_for_backward(gate_up)


def _backward_packed(ctx: Any, dy: Tensor) -> tuple:
    (gate_up,) = ctx.saved_tensors
    return _glu_packed_backward(dy, gate_up, ctx.act), None


_glu.register_autograd(_backward_glu, setup_context=_setup_glu)
_glu_packed.register_autograd(_backward_packed, setup_context=_setup_packed)


def triton_glu(gate: Tensor, up: Tensor | None, act: str) -> Tensor:
    """act(gate) · up on the kernels; `up=None`: `gate` is the packed [.., 2·hidden] gate_up."""
    return _glu_packed(gate, act) if up is None else _glu(gate, up, act)
