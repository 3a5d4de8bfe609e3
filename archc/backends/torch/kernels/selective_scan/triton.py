"""Mamba's selective state update for one decode token as a Triton kernel, rendered per inner
width and state size from `archc/backends/triton/templates/selective_step.py.jinja`, registered with
`torch.library` as `archc::selective_step` (a fake implementation included, so a compiled decode
step traces it as one op). Decoding only: no backward; Mamba calls it under `torch.no_grad()`.
Tested against `naive.py` (tests/backends/torch/kernels/test_selective_step.py)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.library import triton_op, wrap_triton

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
