"""RWKV-4's WKV in Triton, rendered per width: the scan over a whole sequence, forward and backward,
for training (`templates/wkv4_scan.py.jinja`, `archc::wkv4_scan` and its backward, with autograd
and fake implementations), and one decode token (`templates/wkv4_step.py.jinja`,
`archc::wkv4_step`, decoding only: the time-mix calls it under `torch.no_grad()`). Tested against
`naive.py` and `step.py` (tests/backends/torch/kernels/test_wkv4_scan.py, test_wkv4_step.py)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.library import triton_op, wrap_triton

from archc.backends.torch.kernels.common import StableState
from archc.backends.torch.kernels.wkv4.specialize import params, scan_params
from archc.backends.triton.render import render


@triton_op("archc::wkv4_step", mutates_args=())
def _wkv4_step(w: Tensor, u: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor,
               p: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    batch, width = k.shape
    spec = params(width)
    kernel = render("wkv4_step", **spec).module
    out = [torch.empty(batch, width, dtype=torch.float32, device=k.device) for _ in range(4)]
    wrap_triton(kernel.wkv4_step)[(batch, -(-width // spec["BLOCK"]))](
        w.contiguous(), u.contiguous(), k.contiguous(), v.contiguous(), a.contiguous(), b.contiguous(), p.contiguous(),
        *out)
    return out[0], out[1], out[2], out[3]


@_wkv4_step.register_fake
def _(w: Tensor, u: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, p: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return tuple(torch.empty(k.shape, dtype=torch.float32, device=k.device) for _ in range(4))  # type: ignore[return-value]


def triton_wkv4_step(w: Tensor, u: Tensor, k: Tensor, v: Tensor, state: StableState) -> tuple[Tensor, StableState]:
    """`wkv4_step`'s contract: w (e^{time_decay}), u [A]; k, v [B, A]; the state (a, b, p) [B, A].
    Returns (wkv [B, A], the new state), fp32."""
    o, a, b, p = _wkv4_step(w, u, k, v, *state)
    return o, (a, b, p)


# -- the scan over a sequence, forward and backward (templates/wkv4_scan.py.jinja) ----------------


@triton_op("archc::wkv4_scan", mutates_args=())
def _wkv4_scan(w: Tensor, u: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    batch, t, width = k.shape
    spec = scan_params(width)
    kernel = render("wkv4_scan", **spec).module
    o, a, b, p = (torch.empty(batch, t, width, dtype=torch.float32, device=k.device) for _ in range(4))
    wrap_triton(kernel.scan_forward)[(batch, -(-width // spec["BLOCK"]))](w, u, k, v, o, a, b, p, t)
    return o, a, b, p


@_wkv4_scan.register_fake
def _(w: Tensor, u: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return tuple(torch.empty(k.shape, dtype=torch.float32, device=k.device) for _ in range(4))  # type: ignore[return-value]


@triton_op("archc::wkv4_scan_backward", mutates_args=())
def _wkv4_scan_backward(w: Tensor, u: Tensor, k: Tensor, v: Tensor, o: Tensor, a: Tensor, b: Tensor, p: Tensor,
                        do: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    batch, t, width = k.shape
    spec = scan_params(width)
    kernel = render("wkv4_scan", **spec).module
    dk, dv = torch.empty_like(o), torch.empty_like(o)
    dw, du = (torch.empty(batch, width, dtype=torch.float32, device=k.device) for _ in range(2))
    wrap_triton(kernel.scan_backward)[(batch, -(-width // spec["BLOCK"]))](w, u, k, v, o, a, b, p, do,
                                                                          dk, dv, dw, du, t)
    return dw.sum(0).to(w.dtype), du.sum(0).to(u.dtype), dk.to(k.dtype), dv.to(v.dtype)


@_wkv4_scan_backward.register_fake
def _(w: Tensor, u: Tensor, k: Tensor, v: Tensor, o: Tensor, a: Tensor, b: Tensor, p: Tensor,
      do: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return torch.empty_like(w), torch.empty_like(u), torch.empty_like(k), torch.empty_like(v)


def _setup(ctx: Any, inputs: tuple, output: tuple) -> None:
    ctx.save_for_backward(*inputs, *output)


def _backward(ctx: Any, do: Tensor, *_unused: Tensor | None) -> tuple:
    return _wkv4_scan_backward(*ctx.saved_tensors, do.contiguous())


_wkv4_scan.register_autograd(_backward, setup_context=_setup)


def triton_wkv4(w: Tensor, u: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """`chunk.wkv4`'s output from no state (its forward's use: training, a prompt without state),
    forward and backward in Triton: w (e^{time_decay}, > 0), u [A]; k, v [B, T, A]. Returns wkv
    [B, T, A] in fp32. The final state is not returned: its gradient would not flow, so
    state-carrying calls keep the torch form."""
    return _wkv4_scan(w.float().contiguous(), u.float().contiguous(), k.contiguous(), v.contiguous())[0]
