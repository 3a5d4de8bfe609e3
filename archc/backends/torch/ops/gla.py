"""Gated linear attention (Yang et al. 2024), laid out as flash-linear-attention's
`GatedLinearAttention` layer so that checkpoints map one to one:

    q, k = q_proj(x) / √K, k_proj(x);  v, g = v_proj(x), g_proj(x)
    log α = log σ(gk_proj.1(gk_proj.0(x))) / τ          (per key channel; τ = gate_normalizer)
    o = gla(q, k, v, log α);  out = o_proj(RMSNorm_V(o) ⊙ silu(g))   (per head)

The recurrence is `kernels/gla` (chunked form, step, naive reference). Padded positions get k = 0
and α = 1, so padding — left or right — neither writes nor decays the memory. Init: weights
N(0, 0.02) (o_proj the residual std), the decay's bias 0, norm weight 1. State: `recurrent`
[B, H, K, V] in fp32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from archc.backends.torch.context import Context
from archc.backends.torch.kernels.common import wide
from archc.backends.torch.kernels.gla import chunk_gla, gla_step
from archc.backends.torch.layers import mask_padding
from archc.backends.torch.loops import segmented_forward
from archc.backends.torch.module import OpModule, State
from archc.backends.torch.ops.gated_deltanet import GatedHeadNorm
from archc.backends.torch.registry import implements


@implements("gla")
class GLA(OpModule):
    """`gla(x, heads, expand_k, expand_v, gate_rank, gate_normalizer, chunk, norm_eps)`; see the
    module docstring."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        d = in_types[0].width
        self.h = p.heads
        self.k, self.v = p.head_dims(d)
        self.q_proj, self.k_proj, self.v_proj, self.g_proj, self.o_proj = (
            self.make_linear(n) for n in ("q_proj", "k_proj", "v_proj", "g_proj", "o_proj"))
        self.gk_proj = torch.nn.Sequential(self.make_linear("gk_proj.0"), self.make_linear("gk_proj.1"))
        self.g_norm_swish_gate = GatedHeadNorm(self.v, p.norm_eps)

    def _inner(self, x: Tensor, ctx: Context | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(q scaled, k, log α [B, H, T, K]; v [B, H, T, V]; g [B, T, H, V])."""
        x = mask_padding(x, ctx)  # padded tokens: k = v = 0 (no write) ...
        heads = lambda y, w: y.unflatten(-1, (self.h, w)).transpose(1, 2)  # noqa: E731 — [B, H, T, w]
        q = heads(self.q_proj(x), self.k) / math.sqrt(self.k)
        k, v = heads(self.k_proj(x), self.k), heads(self.v_proj(x), self.v)
        log_a = F.logsigmoid(wide(self.gk_proj(x))) / self.params.gate_normalizer
        if ctx is not None and ctx.attention_mask is not None:  # ... and no decay
            log_a = log_a * ctx.attention_mask[..., None].to(log_a.dtype)
        return q, k, v, heads(log_a, self.k), self.g_proj(x).unflatten(-1, (self.h, self.v))

    def _out(self, o: Tensor, g: Tensor) -> Tensor:
        return self.o_proj(self.g_norm_swish_gate(o.transpose(1, 2), g).flatten(2))

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        if (y := segmented_forward(self, x, ctx)) is not None:
            return y
        q, k, v, log_a, g = self._inner(x, ctx)
        o, _ = chunk_gla(q, k, v, log_a, chunk=self.params.chunk)
        return self._out(o.to(x.dtype), g)

    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        q, k, v, log_a, g = self._inner(x, ctx)
        if x.shape[1] == 1:  # one token: the recurrence itself
            o, s = gla_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], log_a[:, :, 0], state[0])
            o = o[:, :, None]
        else:
            o, s = chunk_gla(q, k, v, log_a, state[0], chunk=self.params.chunk)
        return self._out(o.to(x.dtype), g), (s,)
