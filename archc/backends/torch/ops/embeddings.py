"""Token embeddings and absolute position embeddings (learned, sinusoidal)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from archc.backends.torch.context import Context
from archc.backends.torch.module import OpModule
from archc.backends.torch.registry import implements


@implements("embed")
class Embed(OpModule):
    """`weight` [vocab, d] (N(0, 0.02)); optional `token_type.weight` [types, d] added (BERT);
    `scale` multiplies by √d (T5, Gemma)."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.weight = self.make_parameter("weight")
        self.token_type = nn.Embedding(*self.declared("token_type.weight").shape) if p.token_types else None
        self.scale = math.sqrt(p.d) if p.scale else 1.0

    def forward(self, tokens: Tensor, ctx: Context) -> Tensor:
        x = nn.functional.embedding(tokens, self.weight)
        if self.token_type is not None:
            types = ctx.token_type_ids if ctx.token_type_ids is not None else torch.zeros_like(tokens)
            x = x + self.token_type(types)
        return x * self.scale if self.scale != 1.0 else x


@implements("learned_pos")
class LearnedPos(OpModule):
    """x + `weight`[offset + position]; `weight` [max_len + offset, d], N(0, 0.02)."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.weight = self.make_parameter("weight")

    def forward(self, x: Tensor, ctx: Context) -> Tensor:
        return x + self.weight[ctx.positions + self.params.offset]


def sinusoids(positions: Tensor, d: int, base: float) -> Tensor:
    """PE(pos, 2i) = sin(pos / base^(2i/d)), PE(pos, 2i+1) = cos(·) (Vaswani et al., §3.5)."""
    inv = base ** (-torch.arange(0, d, 2, device=positions.device, dtype=torch.float32) / d)
    ang = positions.float()[:, None] * inv[None, :]
    return torch.stack((ang.sin(), ang.cos()), dim=-1).flatten(-2)[:, :d]


@implements("sinusoidal_pos")
class SinusoidalPos(OpModule):
    """x + fixed sinusoids of the absolute position; no parameters."""

    def forward(self, x: Tensor, ctx: Context) -> Tensor:
        return x + sinusoids(ctx.positions, x.shape[-1], self.params.base).to(x.dtype)
