"""RWKV-4's WKV for one decode token as a Triton kernel, rendered per width from
`archc/backends/triton/templates/wkv4_step.py.jinja`, registered with `torch.library` as
`archc::wkv4_step` (a fake implementation included, so a compiled decode step traces it). Decoding
only: no backward; the time-mix calls it under `torch.no_grad()`. Tested against `step.py`
(tests/backends/torch/kernels/test_wkv4_step.py)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.library import triton_op, wrap_triton

from archc.backends.torch.kernels.common import StableState
from archc.backends.torch.kernels.wkv4.specialize import params
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
