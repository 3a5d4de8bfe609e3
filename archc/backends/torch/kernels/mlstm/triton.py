"""The mLSTM memory's decode step on the recurrent-step kernel (rule "mlstm";
kernels/recurrent_step/). Tested against `step.py` (tests/backends/torch/kernels/test_recurrent_step.py)."""

from __future__ import annotations

from torch import Tensor

from archc.backends.torch.kernels.common import StableState
from archc.backends.torch.kernels.recurrent_step.triton import mlstm_step_op


def triton_mlstm_step(q: Tensor, k: Tensor, v: Tensor, log_f: Tensor, i: Tensor,
                      state: StableState) -> tuple[Tensor, StableState]:
    """`mlstm_step`'s contract (eps 1e-6): q, k, v [B, H, D]; log f, i [B, H]; the memory (C, n, m).
    Returns (h [B, H, D], the new memory), fp32."""
    y, c, n, m = mlstm_step_op(q, k, v, log_f, i, *state)
    return y, (c, n, m)
