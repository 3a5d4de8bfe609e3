"""Gated convolution (Dauphin et al., 2017, "Language Modeling with Gated Convolutional Networks").

h = (X∗W + b) ⊗ σ(X∗V + c): one causal `nn.Conv1d` from d to 2d channels (value and gate halves,
the layout of `F.glu`), the input left-padded by k−1 so position t sees only t−k+1..t.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from archc.backends.torch.context import Context
from archc.backends.torch.module import OpModule, State
from archc.backends.torch.registry import implements


@implements("gated_conv")
class GatedConv(OpModule):
    """`gated_conv(x, kernel=k)`. Weights: `conv.weight` [2d, d, k], `conv.bias` [2d] (N(0, 0.02),
    zero bias). State for `step`: `conv` [B, d, k−1], the last k−1 inputs (zeros before the start)."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.kernel = p.kernel
        self.conv = self.make_conv1d("conv", depthwise=False)

    def _glu(self, x_padded: Tensor) -> Tensor:
        """x_padded [B, d, k−1+T] -> [B, T, d]."""
        return F.glu(self.conv(x_padded), dim=1).transpose(1, 2)

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        if ctx is not None and ctx.attention_mask is not None:  # padding contributes nothing
            x = x * ctx.attention_mask[..., None].to(x.dtype)
        return self._glu(F.pad(x.transpose(1, 2), (self.kernel - 1, 0)))


    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        if self.kernel == 1:
            return self.forward(x), state
        window = torch.cat((state[0], x.transpose(1, 2)), dim=2)  # [B, d, k−1+T_new]
        return self._glu(window), (window[:, :, -(self.kernel - 1):],)
