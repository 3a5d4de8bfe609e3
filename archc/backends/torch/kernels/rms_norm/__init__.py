"""RMSNorm, alone or fused with the residual add before it: `naive.py` the reference (and the torch
form), `triton.py` the kernels rendered from `archc/backends/triton/templates/rms_norm.py.jinja`."""

from archc.backends.torch.kernels.rms_norm.naive import naive_rms_norm, rms_norm

__all__ = ["naive_rms_norm", "rms_norm"]
