"""Rotary position embedding: `naive.py` the reference (and the torch form attention runs),
`triton.py` the kernel rendered from `archc/backends/triton/templates/rotary.py.jinja`."""

from archc.backends.torch.kernels.rotary.naive import apply_rope

__all__ = ["apply_rope"]
