"""The scalar-decay recurrence's decode step as a Triton kernel, rendered per key and value width
and state layout from `archc/backends/triton/templates/decay_step.py.jinja` and registered with
`torch.library` as `archc::decay_step` (a fake implementation included, so a compiled decode step
traces it as one op). Decoding only: it has no backward, and the modules call it under
`torch.no_grad()` alone. Tested against `naive.py` (tests/backends/torch/kernels/test_decay_step.py)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.library import triton_op, wrap_triton

from archc.backends.torch.kernels.ssd.specialize import params
from archc.backends.triton.render import render


@triton_op("archc::decay_step", mutates_args=())
def _decay_step(q: Tensor, k: Tensor, v: Tensor, log_a: Tensor, state: Tensor, v_major: bool) -> tuple[Tensor, Tensor]:
    key, value = q.shape[-1], v.shape[-1]
    p = params(key, value, v_major)
    kernel = render("decay_step", **p).module
    pairs = q.shape[0] * q.shape[1]
    y = torch.empty(*v.shape, dtype=torch.float32, device=v.device)
    new = torch.empty(state.shape, dtype=torch.float32, device=state.device)
    wrap_triton(kernel.decay_step)[(pairs, -(-value // p["BV"]))](
        q.contiguous(), k.contiguous(), v.contiguous(), log_a.contiguous(), state.contiguous(), new, y)
    return y, new


@_decay_step.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, log_a: Tensor, state: Tensor, v_major: bool) -> tuple[Tensor, Tensor]:
    return (torch.empty(*v.shape, dtype=torch.float32, device=v.device),
            torch.empty(state.shape, dtype=torch.float32, device=state.device))


def triton_decay_step(q: Tensor, k: Tensor, v: Tensor, log_a: Tensor, state: Tensor,
                      v_major: bool = False) -> tuple[Tensor, Tensor]:
    """One token of S ← exp(log_a) S + kᵀ v, y = q S: q, k [B, H, K]; v [B, H, V]; log_a [B, H];
    state [B, H, K, V] ([B, H, V, K] with `v_major`). Returns (y [B, H, V], the new state), fp32."""
    return _decay_step(q, k, v, log_a, state, v_major)
