"""RMSNorm and the residual add + RMSNorm as Triton kernels, rendered per width from
`archc/backends/triton/templates/rms_norm.py.jinja` and registered with `torch.library`
(`triton_op` + `register_autograd`), so `torch.compile` and `torch.export` see three ops —
`archc::rms_norm`, `archc::add_rms_norm`, `archc::rms_norm_backward` — not graph breaks.

The forward keeps one fp32 rstd a row for the backward (not the normalized row: Liger's and
Unsloth's choice, recomputing ŝ = s · rstd there); the backward writes each program's partial dw,
which the caller sums. Tested against `naive.py` (tests/backends/torch/kernels/test_rms_norm.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.library import triton_op, wrap_triton

from archc.backends.torch.kernels.launch import as_rows, row_programs
from archc.backends.torch.kernels.rms_norm.specialize import params
from archc.backends.triton.render import render


def _kernels(width: int, residual: bool, unit_offset: bool) -> Any:
    return render("rms_norm", **params(width, residual, unit_offset)).module


@triton_op("archc::rms_norm", mutates_args=())
def _rms_norm(x: Tensor, weight: Tensor, eps: float, unit_offset: bool) -> tuple[Tensor, Tensor]:
    rows = as_rows(x)
    y = torch.empty_like(rows)
    rstd = torch.empty(rows.shape[0], dtype=torch.float32, device=x.device)
    k = _kernels(rows.shape[1], False, unit_offset)
    wrap_triton(k.rms_norm_forward)[(rows.shape[0],)](rows, weight.contiguous(), y, rstd, eps, rows.shape[1])
    return y.view(x.shape), rstd


@triton_op("archc::add_rms_norm", mutates_args=())
def _add_rms_norm(x: Tensor, residual: Tensor, weight: Tensor, eps: float,
                  unit_offset: bool) -> tuple[Tensor, Tensor, Tensor]:
    rows, res = as_rows(x), as_rows(residual)
    y, s = torch.empty_like(rows), torch.empty_like(rows)
    rstd = torch.empty(rows.shape[0], dtype=torch.float32, device=x.device)
    k = _kernels(rows.shape[1], True, unit_offset)
    wrap_triton(k.rms_norm_forward)[(rows.shape[0],)](rows, res, s, weight.contiguous(), y, rstd, eps,
                                                      rows.shape[1])
    return y.view(x.shape), s.view(x.shape), rstd


@triton_op("archc::rms_norm_backward", mutates_args=())
def _rms_norm_backward(dy: Tensor, s: Tensor, weight: Tensor, rstd: Tensor, dsum: Tensor | None,
                       unit_offset: bool) -> tuple[Tensor, Tensor]:
    rows, g = as_rows(s), as_rows(dy)
    n, width = rows.shape
    programs = row_programs(n, s.device)
    per = -(-n // programs)
    ds = torch.empty_like(rows)
    dw = torch.empty(programs, width, dtype=torch.float32, device=s.device)
    k = _kernels(width, dsum is not None, unit_offset)
    extra = (as_rows(dsum),) if dsum is not None else ()
    wrap_triton(k.rms_norm_backward)[(programs,)](g, rows, weight.contiguous(), rstd, ds, dw, *extra, n, width,
                                                 ROWS=per)
    return ds.view(s.shape), dw.sum(0).to(weight.dtype)


def _setup(ctx: Any, inputs: tuple, output: tuple) -> None:
    residual = len(inputs) == 5
    weight, _eps, unit_offset = inputs[-3:]
    s = output[1] if residual else inputs[0]
    ctx.save_for_backward(s, weight, output[-1])
    ctx.unit_offset, ctx.residual = unit_offset, residual


def _backward_norm(ctx: Any, dy: Tensor, _drstd: Tensor) -> tuple:
    s, weight, rstd = ctx.saved_tensors
    ds, dw = _rms_norm_backward(dy, s, weight, rstd, None, ctx.unit_offset)
    return ds, dw, None, None


def _backward_add_norm(ctx: Any, dy: Tensor, dsum: Tensor | None, _drstd: Tensor) -> tuple:
    s, weight, rstd = ctx.saved_tensors
    ds, dw = _rms_norm_backward(dy, s, weight, rstd, dsum, ctx.unit_offset)
    return ds, ds, dw, None, None


# shapes for tracers (torch.compile, torch.export, the activation profile's fake tensors): the
# ops stay opaque, so a traced graph holds `archc.rms_norm` rather than the kernel's launch
@_rms_norm.register_fake
def _(x: Tensor, weight: Tensor, eps: float, unit_offset: bool) -> tuple[Tensor, Tensor]:
    return torch.empty_like(x), x.new_empty(x.numel() // x.shape[-1], dtype=torch.float32)


@_add_rms_norm.register_fake
def _(x: Tensor, residual: Tensor, weight: Tensor, eps: float, unit_offset: bool) -> tuple[Tensor, Tensor, Tensor]:
    return torch.empty_like(x), torch.empty_like(x), x.new_empty(x.numel() // x.shape[-1], dtype=torch.float32)


@_rms_norm_backward.register_fake
def _(dy: Tensor, s: Tensor, weight: Tensor, rstd: Tensor, dsum: Tensor | None,
      unit_offset: bool) -> tuple[Tensor, Tensor]:
    return torch.empty_like(s), torch.empty_like(weight)


_rms_norm.register_autograd(_backward_norm, setup_context=_setup)
_add_rms_norm.register_autograd(_backward_add_norm, setup_context=_setup)


def triton_rms_norm(x: Tensor, weight: Tensor, eps: float, unit_offset: bool = False,
                    residual: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """`naive_rms_norm`'s contract on the kernels: (the norm of s, s) for s = x + residual (or x)."""
    if residual is None:
        return _rms_norm(x, weight, eps, unit_offset)[0], x
    y, s, _ = _add_rms_norm(x, residual, weight, eps, unit_offset)
    return y, s
