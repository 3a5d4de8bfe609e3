"""Mamba's selective scan in Triton: the scan over a sequence, forward and backward
(`templates/selective_scan.py.jinja`, `archc::selective_scan` with its autograd), and the selective
state update for one decode token as a Triton kernel, rendered per inner
width and state size from `archc/backends/triton/templates/selective_step.py.jinja`, registered with
`torch.library` as `archc::selective_step` (a fake implementation included, so a compiled decode
step traces it as one op). Decoding only: no backward; Mamba calls it under `torch.no_grad()`.
Tested against `naive.py` (tests/backends/torch/kernels/test_selective_step.py)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.library import triton_op, wrap_triton

from archc.backends.torch.kernels.selective_scan.scan_specialize import params as scan_params
from archc.backends.torch.kernels.selective_scan.specialize import params
from archc.backends.triton.render import render


@triton_op("archc::selective_step", mutates_args=())
def _selective_step(u: Tensor, dt: Tensor, z: Tensor, a: Tensor, d: Tensor, b: Tensor, c: Tensor,
                    h: Tensor) -> tuple[Tensor, Tensor]:
    batch, channels, states = h.shape
    p = params(channels, states)
    kernel = render("selective_step", **p).module
    y = torch.empty(batch, channels, dtype=torch.float32, device=u.device)
    new = torch.empty(h.shape, dtype=torch.float32, device=h.device)
    wrap_triton(kernel.selective_step)[(batch, -(-channels // p["BE"]))](
        u.contiguous(), dt.contiguous(), z.contiguous(), a.contiguous(), d.contiguous(), b.contiguous(),
        c.contiguous(), h.contiguous(), new, y)
    return y, new


@_selective_step.register_fake
def _(u: Tensor, dt: Tensor, z: Tensor, a: Tensor, d: Tensor, b: Tensor, c: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    return (torch.empty(h.shape[:2], dtype=torch.float32, device=u.device),
            torch.empty(h.shape, dtype=torch.float32, device=h.device))


def triton_selective_step(u: Tensor, dt: Tensor, z: Tensor, a: Tensor, d: Tensor, b: Tensor, c: Tensor,
                          h: Tensor) -> tuple[Tensor, Tensor]:
    """One token: u, Δ, z [B, E]; A [E, N]; D [E]; B, C [B, N]; h [B, E, N]. Returns the gated
    output (h C + D u) · silu(z) [B, E] and the new state, fp32."""
    return _selective_step(u, dt, z, a, d, b, c, h)


# -- the scan, forward and backward (templates/selective_scan.py.jinja) ---------------------------


def _scan_kernels(channels: int, states: int) -> tuple[Any, dict[str, Any]]:
    p = scan_params(channels, states)
    return render("selective_scan", **p).module, p


@triton_op("archc::selective_scan", mutates_args=())
def _selective_scan(u: Tensor, dt: Tensor, a: Tensor, b: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    batch, t, channels = u.shape
    kern, p = _scan_kernels(channels, a.shape[1])
    chunks = -(-t // p["C"])
    y = torch.empty(batch, t, channels, dtype=torch.float32, device=u.device)
    ckpt = torch.empty(batch, chunks + 1, channels, a.shape[1], dtype=torch.float32, device=u.device)
    wrap_triton(kern.scan_forward)[(batch, -(-channels // p["BD"]))](u, dt, a, b, c, y, ckpt, t, chunks)
    return y, ckpt


@_selective_scan.register_fake
def _(u: Tensor, dt: Tensor, a: Tensor, b: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    chunks = -(-u.shape[1] // scan_params(u.shape[2], a.shape[1])["C"])
    return (u.new_empty(u.shape, dtype=torch.float32),
            u.new_empty(u.shape[0], chunks + 1, u.shape[2], a.shape[1], dtype=torch.float32))


@triton_op("archc::selective_scan_backward", mutates_args=())
def _selective_scan_backward(u: Tensor, dt: Tensor, a: Tensor, b: Tensor, c: Tensor, ckpt: Tensor,
                             dy: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    batch, t, channels = u.shape
    states = a.shape[1]
    kern, p = _scan_kernels(channels, states)
    blocks = -(-channels // p["BD"])
    f32 = {"dtype": torch.float32, "device": u.device}
    scratch = torch.empty(batch, blocks, p["C"] + 1, p["BD"], p["BN"], **f32)
    du, ddt = torch.empty(batch, t, channels, **f32), torch.empty(batch, t, channels, **f32)
    da = torch.empty(batch, channels, states, **f32)  # partial over the batch
    db, dc = torch.empty(blocks, batch, t, states, **f32), torch.empty(blocks, batch, t, states, **f32)
    wrap_triton(kern.scan_backward)[(batch, blocks)](u, dt, a, b, c, dy, ckpt, scratch, du, ddt, da, db, dc, t,
                                                      ckpt.shape[1] - 1, batch)
    return (du.to(u.dtype), ddt.to(dt.dtype), da.sum(0).to(a.dtype), db.sum(0).to(b.dtype), dc.sum(0).to(c.dtype))


@_selective_scan_backward.register_fake
def _(u: Tensor, dt: Tensor, a: Tensor, b: Tensor, c: Tensor, ckpt: Tensor,
      dy: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return torch.empty_like(u), torch.empty_like(dt), torch.empty_like(a), torch.empty_like(b), torch.empty_like(c)


def _scan_setup(ctx: Any, inputs: tuple, output: tuple) -> None:
    ctx.save_for_backward(*inputs, output[1])


def _scan_backward(ctx: Any, dy: Tensor, _d_ckpt: Tensor | None) -> tuple:
    u, dt, a, b, c, ckpt = ctx.saved_tensors
    return _selective_scan_backward(u, dt, a, b, c, ckpt, dy.contiguous())


_selective_scan.register_autograd(_scan_backward, setup_context=_scan_setup)


def triton_selective_scan(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
    """`chunk.selective_scan`'s output from a zero state (the forward's use: training, a prompt
    without state), forward and backward in Triton: u, Δ [B, T, E]; A [E, N]; B, C [B, T, N].
    Returns y [B, T, E] in fp32 (the final state is not returned: its gradient would not flow)."""
    return _selective_scan(u.contiguous(), dt.contiguous(), A.contiguous(), B.contiguous(), C.contiguous())[0]
