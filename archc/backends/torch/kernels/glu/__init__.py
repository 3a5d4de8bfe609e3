"""The gating of SwiGLU / GeGLU FFNs, act(gate) · up: `naive.py` the reference (PyTorch's
activations), `triton.py` the kernels rendered from `archc/backends/triton/templates/glu.py.jinja`,
separate gate and up or the packed gate_up projection's output read in place."""

from archc.backends.torch.kernels.glu.naive import naive_glu

__all__ = ["naive_glu"]
