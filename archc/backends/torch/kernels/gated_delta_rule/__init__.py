"""The gated delta rule (Yang, Kautz & Hatamizadeh 2024, "Gated Delta Networks"), per head:

    S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ,    o_t = S_tᵀ q_t

with S [K, V], decay α_t = exp(g_t) ∈ (0, 1] and writing strength β_t ∈ (0, 1). `naive.py` is the
recurrence token by token (the ground truth), `chunk.py` the chunked WY form for training and
prefill, `step.py` one token from a state."""

from archc.backends.torch.kernels.gated_delta_rule.chunk import chunk_gated_delta_rule
from archc.backends.torch.kernels.gated_delta_rule.naive import naive_gated_delta_rule
from archc.backends.torch.kernels.gated_delta_rule.step import gated_delta_rule_step

__all__ = ["chunk_gated_delta_rule", "gated_delta_rule_step", "naive_gated_delta_rule"]
