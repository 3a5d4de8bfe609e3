"""RWKV-6's WKV decode step on the recurrent-step kernel (rule "wkv"; kernels/recurrent_step/).
Tested against `step.py` (tests/backends/torch/kernels/test_recurrent_step.py)."""

from __future__ import annotations

from torch import Tensor

from archc.backends.torch.kernels.recurrent_step.triton import recurrent_step


def triton_wkv6_step(r: Tensor, k: Tensor, v: Tensor, log_w: Tensor, u: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """`wkv6_step`'s contract: r, k, log_w [B, H, K]; v [B, H, V]; the bonus u [H, K]; state
    [B, H, K, V]. Returns (y [B, H, V], the new state), fp32."""
    return recurrent_step("wkv", r, k, v, log_w, u, state, False)
