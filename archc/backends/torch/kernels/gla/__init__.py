"""Gated linear attention's recurrence (Yang et al. 2024): S_t = diag(α_t) S_{t−1} + k_tᵀ v_t,
o_t = q_t S_t, with a decay per key channel. `naive.py` is the recurrence token by token (the
ground truth), `chunk.py` the chunked form for training and prefill, `step.py` one token."""

from archc.backends.torch.kernels.gla.chunk import GLA_CHUNK, chunk_gla
from archc.backends.torch.kernels.gla.naive import naive_gla
from archc.backends.torch.kernels.gla.step import gla_step

__all__ = ["GLA_CHUNK", "chunk_gla", "gla_step", "naive_gla"]
