"""The gating of a gated FFN (Shazeer, 2020, "GLU Variants Improve Transformer"): act(gate) · up,
SiLU for SwiGLU, GELU (tanh approximation) for GeGLU — PyTorch's own activations, the reference
the Triton kernel (`triton.py`) is tested against."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

ACTIVATIONS = {"silu": F.silu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh")}


def naive_glu(gate: Tensor, up: Tensor, act: str) -> Tensor:
    return ACTIVATIONS[act](gate) * up
