"""RWKV-7's generalized delta rule (Peng et al. 2025): S_t = (diag(w_t) + b_t a_tᵀ) S_{t−1} +
k_t v_tᵀ, o_t = S_tᵀ r_t, a decay and a rank-one update per token (flash-linear-attention's
`dplr_delta_rule`). `naive.py` is the recurrence token by token (the ground truth), `chunk.py` the
chunked form for training and prefill, `step.py` one token."""

from archc.backends.torch.kernels.rwkv7.chunk import RWKV7_CHUNK, chunk_rwkv7
from archc.backends.torch.kernels.rwkv7.naive import naive_rwkv7
from archc.backends.torch.kernels.rwkv7.step import rwkv7_step

__all__ = ["RWKV7_CHUNK", "chunk_rwkv7", "naive_rwkv7", "rwkv7_step"]
