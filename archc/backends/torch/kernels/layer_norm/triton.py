"""LayerNorm and the residual add + LayerNorm as Triton kernels, rendered per width and affine
flags from `archc/backends/triton/templates/layer_norm.py.jinja` and registered with
`torch.library` as `archc::layer_norm`, `archc::add_layer_norm` and `archc::layer_norm_backward`
(autograd and fake implementations included, so tracers see one op). The forward keeps one fp32
mean and rstd a row. Tested against `naive.py` (tests/backends/torch/kernels/test_layer_norm.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.library import triton_op, wrap_triton

from archc.backends.torch.kernels.launch import as_rows, row_programs
from archc.backends.torch.kernels.layer_norm.specialize import params
from archc.backends.triton.render import render


def _kernels(width: int, residual: bool, weight: Tensor | None, bias: Tensor | None) -> Any:
    return render("layer_norm", **params(width, residual, weight is not None, bias is not None)).module


def _stats(rows: Tensor) -> tuple[Tensor, Tensor]:
    return (torch.empty(rows.shape[0], dtype=torch.float32, device=rows.device),
            torch.empty(rows.shape[0], dtype=torch.float32, device=rows.device))


def _affine(t: Tensor | None, like: Tensor) -> Tensor:
    """A pointer argument for an absent weight or bias (the specialized kernel never reads it)."""
    return t.contiguous() if t is not None else like


@triton_op("archc::layer_norm", mutates_args=())
def _layer_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    rows = as_rows(x)
    y = torch.empty_like(rows)
    mean, rstd = _stats(rows)
    k = _kernels(rows.shape[1], False, weight, bias)
    wrap_triton(k.layer_norm_forward)[(rows.shape[0],)](rows, _affine(weight, rows), _affine(bias, rows), y, mean,
                                                        rstd, eps, rows.shape[1])
    return y.view(x.shape), mean, rstd


@triton_op("archc::add_layer_norm", mutates_args=())
def _add_layer_norm(x: Tensor, residual: Tensor, weight: Tensor | None, bias: Tensor | None,
                    eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    rows, res = as_rows(x), as_rows(residual)
    y, s = torch.empty_like(rows), torch.empty_like(rows)
    mean, rstd = _stats(rows)
    k = _kernels(rows.shape[1], True, weight, bias)
    wrap_triton(k.layer_norm_forward)[(rows.shape[0],)](rows, res, s, _affine(weight, rows), _affine(bias, rows), y,
                                                        mean, rstd, eps, rows.shape[1])
    return y.view(x.shape), s.view(x.shape), mean, rstd


@triton_op("archc::layer_norm_backward", mutates_args=())
def _layer_norm_backward(dy: Tensor, s: Tensor, weight: Tensor | None, mean: Tensor, rstd: Tensor,
                         dsum: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """(ds, dw, db); dw and db are summed in fp32 (the caller casts them to the weights' dtype)."""
    rows, g = as_rows(s), as_rows(dy)
    n, width = rows.shape
    programs = row_programs(n, s.device)
    ds = torch.empty_like(rows)
    dw = torch.empty(programs, width, dtype=torch.float32, device=s.device)
    db = torch.empty(programs, width, dtype=torch.float32, device=s.device)
    k = _kernels(width, dsum is not None, weight, None)
    extra = (as_rows(dsum),) if dsum is not None else ()
    wrap_triton(k.layer_norm_backward)[(programs,)](g, rows, _affine(weight, rows), mean, rstd, ds, dw, db, *extra, n,
                                                   width, ROWS=-(-n // programs))
    return ds.view(s.shape), dw.sum(0), db.sum(0)


@_layer_norm.register_fake
def _(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    n = x.numel() // x.shape[-1]
    return torch.empty_like(x), x.new_empty(n, dtype=torch.float32), x.new_empty(n, dtype=torch.float32)


@_add_layer_norm.register_fake
def _(x: Tensor, residual: Tensor, weight: Tensor | None, bias: Tensor | None,
      eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    n = x.numel() // x.shape[-1]
    return (torch.empty_like(x), torch.empty_like(x), x.new_empty(n, dtype=torch.float32),
            x.new_empty(n, dtype=torch.float32))


@_layer_norm_backward.register_fake
def _(dy: Tensor, s: Tensor, weight: Tensor | None, mean: Tensor, rstd: Tensor,
      dsum: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    w = s.shape[-1]
    return torch.empty_like(s), s.new_empty(w, dtype=torch.float32), s.new_empty(w, dtype=torch.float32)


def _setup(ctx: Any, inputs: tuple, output: tuple) -> None:
    ctx.residual = len(inputs) == 5
    weight, bias = inputs[-3], inputs[-2]
    s = output[1] if ctx.residual else inputs[0]
    ctx.save_for_backward(s, weight, output[-2], output[-1])
    ctx.has_weight, ctx.has_bias = weight is not None, bias is not None
    ctx.dtypes = (weight.dtype if weight is not None else None, bias.dtype if bias is not None else None)


def _grads(ctx: Any, dy: Tensor, dsum: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor | None]:
    s, weight, mean, rstd = ctx.saved_tensors
    ds, dw, db = _layer_norm_backward(dy, s, weight, mean, rstd, dsum)
    return (ds, dw.to(ctx.dtypes[0]) if ctx.has_weight else None, db.to(ctx.dtypes[1]) if ctx.has_bias else None)


def _backward_norm(ctx: Any, dy: Tensor, _dmean: Tensor, _drstd: Tensor) -> tuple:
    ds, dw, db = _grads(ctx, dy, None)
    return ds, dw, db, None


def _backward_add_norm(ctx: Any, dy: Tensor, dsum: Tensor | None, _dmean: Tensor, _drstd: Tensor) -> tuple:
    ds, dw, db = _grads(ctx, dy, dsum)
    return ds, ds, dw, db, None


_layer_norm.register_autograd(_backward_norm, setup_context=_setup)
_add_layer_norm.register_autograd(_backward_add_norm, setup_context=_setup)


def triton_layer_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float,
                      residual: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """`naive_layer_norm`'s contract on the kernels: (the norm of s, s) for s = x + residual (or x)."""
    if residual is None:
        return _layer_norm(x, weight, bias, eps)[0], x
    y, s, _, _ = _add_layer_norm(x, residual, weight, bias, eps)
    return y, s
