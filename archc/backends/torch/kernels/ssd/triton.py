"""The scalar-decay recurrence's decode step on the recurrent-step kernel (rule "decay";
kernels/recurrent_step/). Tested against `naive.py` (tests/backends/torch/kernels/test_recurrent_step.py)."""

from __future__ import annotations

from torch import Tensor

from archc.backends.torch.kernels.recurrent_step.triton import recurrent_step


def triton_decay_step(q: Tensor, k: Tensor, v: Tensor, log_a: Tensor, state: Tensor,
                      v_major: bool = False) -> tuple[Tensor, Tensor]:
    """One token of S ← exp(log_a) S + kᵀ v, y = q S: q, k [B, H, K]; v [B, H, V]; log_a [B, H];
    state [B, H, K, V] ([B, H, V, K] with `v_major`). Returns (y [B, H, V], the new state), fp32."""
    return recurrent_step("decay", q, k, v, log_a, log_a, state, v_major)
