"""Multi-head latent attention's attention over compressed latents (DeepSeek-V2 §2.1): `naive.py`
the paper's equations query by query with every head's keys and values expanded (the ground
truth), `chunk.py` the training and prefill form (keys and values expanded, one fused SDPA),
`step.py` the decode form over the compressed cache with W_UK absorbed into the queries and W_UV
applied after the weighted sum of latents (no per-head keys or values are ever formed)."""

from archc.backends.torch.kernels.mla.chunk import expanded_mla
from archc.backends.torch.kernels.mla.naive import naive_mla
from archc.backends.torch.kernels.mla.step import absorbed_mla

__all__ = ["absorbed_mla", "expanded_mla", "naive_mla"]
