"""Memorizing Transformers' kNN-augmented attention (archc/ops/retrieval.py):

    q, k, v = q_proj(x), k_proj(x), v_proj(x)  (per head);  q̂, k̂ = q/‖q‖ · e^{log_scale}, k/‖k‖
    out = o_proj(knn_attention(q̂, k̂, v, gate))        (`kernels/knn_attention`)

Segments are cut at absolute positions (multiples of `segment`), so a left-padded sequence is
segmented as its positions say; padded tokens are neither attended nor retrieved. Init: N(0, 0.02)
projections (o_proj the residual std), gate 0 (σ = ½), log_scale = log √head_dim (the scale of
unnormalized attention at init). State: `key` (normalized) and `value` [B, H, max_len, hd].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from archc.backends.torch.context import Context
from archc.backends.torch.init import Init
from archc.backends.torch.kernels.knn_attention import knn_attention, knn_attention_step
from archc.backends.torch.module import OpModule, State
from archc.backends.torch.registry import implements


@implements("knn_attention")
class KNNAttention(OpModule):
    """`knn_attention(x, heads, head_dim, topk, segment, index)`; see the module docstring."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.hd = p.head_dim_for(in_types[0].width)
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (self.make_linear(f"{n}_proj") for n in "qkvo")
        self.gate, self.log_scale = self.make_parameter("gate"), self.make_parameter("log_scale")

    def init_weights(self, init: Init) -> None:
        init.default(self)
        with torch.no_grad():
            self.log_scale.fill_(math.log(math.sqrt(self.hd)))

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, t, _ = x.shape
        heads = lambda y: y.view(b, t, -1, self.hd).transpose(1, 2)  # noqa: E731 — [B, H, T, hd]
        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        q = F.normalize(q, dim=-1) * self.log_scale.exp()[:, None, None]
        return q, F.normalize(k, dim=-1), v

    def _out(self, y: Tensor) -> Tensor:
        b, h, t, hd = y.shape
        return self.o_proj(y.transpose(1, 2).reshape(b, t, h * hd))

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        q, k, v = self._qkv(x)
        valid = None if ctx is None or ctx.attention_mask is None else ctx.attention_mask.bool()
        p = self.params
        return self._out(knn_attention(q, k, v, self.gate, p.segment, p.topk, valid, p.index))

    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        q, k, v = self._qkv(x)
        keys = state[0].index_copy(2, ctx.positions, k.to(state[0].dtype))
        values = state[1].index_copy(2, ctx.positions, v.to(state[1].dtype))
        valid = None
        if ctx.attention_mask is not None:  # in decoding: which absolute positions are real
            valid = ctx.attention_mask.bool().index_select(1, torch.arange(keys.shape[2], device=x.device))
        y = knn_attention_step(q, keys.to(q.dtype), values.to(q.dtype), ctx.positions, self.gate, self.params.segment,
                               self.params.topk, valid)
        return self._out(y), (keys, values)
