"""The gated delta rule's decode step on the recurrent-step kernel (rule "delta";
kernels/recurrent_step/). Tested against `step.py` (tests/backends/torch/kernels/test_recurrent_step.py)."""

from __future__ import annotations

from torch import Tensor

from archc.backends.torch.kernels.recurrent_step.triton import recurrent_step


def triton_delta_rule_step(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
                           state: Tensor) -> tuple[Tensor, Tensor]:
    """`gated_delta_rule_step`'s contract: q, k [B, H, K], v [B, H, V], g (log α), β [B, H], state
    [B, H, K, V]. Returns (o [B, H, V], the new state), fp32."""
    return recurrent_step("delta", q, k, v, g, beta, state, False)
