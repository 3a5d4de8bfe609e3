"""The sLSTM cell's decode step as a Triton kernel, rendered per head width from
`archc/backends/triton/templates/slstm_step.py.jinja`, registered with `torch.library` as
`archc::slstm_step` (with a fake implementation, so a compiled decode step traces it). Decoding
only: no backward; the layer calls it for one token under `torch.no_grad()`. Tested against
`slstm_cell` (tests/backends/torch/kernels/test_slstm.py)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.library import triton_op, wrap_triton

from archc.backends.torch.kernels.slstm.specialize import params
from archc.backends.triton.render import render


@triton_op("archc::slstm_step", mutates_args=())
def _slstm_step(g: Tensor, r: Tensor, h: Tensor, c: Tensor, n: Tensor, m: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    batch, _, heads, head = g.shape
    kernel = render("slstm_step", **params(head)).module
    out = [torch.empty(batch, heads, head, dtype=torch.float32, device=g.device) for _ in range(4)]
    wrap_triton(kernel.slstm_step)[(batch, heads)](g.contiguous(), r.contiguous(), h.contiguous(), c.contiguous(),
                                                   n.contiguous(), m.contiguous(), *out, heads)
    return out[0], out[1], out[2], out[3]


@_slstm_step.register_fake
def _(g: Tensor, r: Tensor, h: Tensor, c: Tensor, n: Tensor, m: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return tuple(torch.empty(h.shape, dtype=torch.float32, device=h.device) for _ in range(4))  # type: ignore[return-value]


def triton_slstm_step(g: Tensor, R: Tensor, state: tuple[Tensor, Tensor, Tensor, Tensor]) -> tuple[Tensor, ...]:
    """`slstm_cell`'s contract: g [B, 4, H, D] the gates' input pre-activations; R [H, D, 4, D];
    state (h, c, n, m) [B, H, D]. Returns the new (h, c, n, m), fp32."""
    return _slstm_step(g, R, *state)
