"""LayerNorm, alone or fused with the residual add before it: `naive.py` the reference (PyTorch's
`F.layer_norm`), `triton.py` the kernels rendered from
`archc/backends/triton/templates/layer_norm.py.jinja`."""

from archc.backends.torch.kernels.layer_norm.naive import naive_layer_norm

__all__ = ["naive_layer_norm"]
