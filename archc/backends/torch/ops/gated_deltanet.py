"""Gated DeltaNet (Yang, Kautz & Hatamizadeh 2024), laid out as transformers'
`Qwen3NextGatedDeltaNet` so that checkpoints map one to one:

    q, k, v, z = in_proj_qkvz(x)   (interleaved per key head: [q K | k K | v g·V | z g·V])
    b, a = in_proj_ba(x)           (per key head: [b g | a g]),  g = v_heads / heads
    q, k, v = silu(conv1d([q, k, v]))          (causal, depthwise, no bias)
    q, k = l2norm(q)/√K, l2norm(k);  β = σ(b);  log α = −exp(A_log)·softplus(a + dt_bias)
    o = gated_delta_rule(q, k, v, α, β);  out = out_proj(RMSNorm_V(o) ⊙ silu(z))

The rule itself is `kernels/gated_delta_rule` (chunked WY form, step, naive reference). Padded
positions get β = 0 and α = 1, so padding — left or right — neither writes nor decays the memory.
Init: weights N(0, 0.02) (out_proj the residual std), the conv PyTorch's default, dt_bias as
Mamba's (softplus(dt_bias) log-uniform in [0.001, 0.1]), A = exp(A_log) ~ U(0.01, 16) as FLA's
and transformers', norm weight 1. State: `conv` [B, 2HK + HvV, d_conv], `recurrent` [B, Hv, K, V].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archc.backends.torch.context import Context
from archc.backends.torch.init import Init
from archc.backends.torch.kernels.common import wide
from archc.backends.torch.kernels.gated_delta_rule import chunk_gated_delta_rule, gated_delta_rule_step
from archc.backends.torch.layers import causal_depthwise_conv, init_conv, init_dt_bias, mask_padding
from archc.backends.torch.loops import segmented_forward
from archc.backends.torch.module import OpModule, State
from archc.backends.torch.registry import implements

#: l2norm's ε (flash-linear-attention's and transformers').
L2_EPS = 1e-6


def l2norm(x: Tensor, eps: float = L2_EPS) -> Tensor:
    """x / √(Σx² + ε), in fp32 (flash-linear-attention's and transformers' form)."""
    x = x.float()
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


class GatedHeadNorm(nn.Module):
    """RMSNorm of each value head's output, then the gate: weight · norm(o) ⊙ silu(z); weight [V]."""

    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, o: Tensor, z: Tensor) -> Tensor:
        h = o.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * h.to(z.dtype) * F.silu(z.float())).to(z.dtype)


@implements("gated_deltanet")
class GatedDeltaNet(OpModule):
    """`gated_deltanet(x, heads, head_dim, v_heads, v_head_dim, d_conv, chunk, norm_eps)`; see the
    module docstring."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.h, self.hv, self.k, self.v = p.heads, p.value_heads, p.head_dim, p.value_dim
        self.group = self.hv // self.h
        self.in_proj_qkvz, self.in_proj_ba = self.make_linear("in_proj_qkvz"), self.make_linear("in_proj_ba")
        self.conv1d = self.make_conv1d("conv1d")
        self.dt_bias, self.A_log = self.make_parameter("dt_bias"), self.make_parameter("A_log")
        self.norm = GatedHeadNorm(self.declared("norm.weight").shape[0], p.norm_eps)
        self.out_proj = self.make_linear("out_proj")

    def init_weights(self, init: Init) -> None:
        init.default(self)
        init_conv(self.conv1d, init)
        init_dt_bias(self.dt_bias, init)
        a = torch.empty(self.hv)
        init.uniform_(a, 0.01, 16.0)
        with torch.no_grad():
            self.A_log.copy_(a.log())

    def _inner(self, x: Tensor, ctx: Context | None, conv_prev: Tensor | None):
        """(q, k [B, Hv, T, K] normalized, q scaled; v [B, Hv, T, V]; log α, β [B, Hv, T];
        z [B, T, Hv, V]; the new conv window)."""
        b_, t = x.shape[:2]
        x = mask_padding(x, ctx)
        q, k, v, z = self.in_proj_qkvz(x).unflatten(-1, (self.h, -1)).split(
            (self.k, self.k, self.group * self.v, self.group * self.v), dim=-1)
        beta, a = self.in_proj_ba(x).unflatten(-1, (self.h, -1)).split((self.group, self.group), dim=-1)
        mixed = torch.cat((q.flatten(2), k.flatten(2), v.flatten(2)), dim=-1).transpose(1, 2)
        mixed, conv_state = causal_depthwise_conv(mixed, self.conv1d, conv_prev)
        q, k, v = F.silu(mixed).transpose(1, 2).split((self.h * self.k, self.h * self.k, self.hv * self.v), dim=-1)
        q = l2norm(q.unflatten(-1, (self.h, self.k))) / math.sqrt(self.k)
        k = l2norm(k.unflatten(-1, (self.h, self.k)))
        if self.group > 1:  # each key head serves `group` consecutive value heads
            q, k = q.repeat_interleave(self.group, dim=2), k.repeat_interleave(self.group, dim=2)
        v = v.unflatten(-1, (self.hv, self.v))
        beta = torch.sigmoid(beta.reshape(b_, t, self.hv).float())
        log_alpha = -self.A_log.float().exp() * F.softplus(a.reshape(b_, t, self.hv).float() + self.dt_bias.float())
        if ctx is not None and ctx.attention_mask is not None:  # padding: no write, no decay
            keep = ctx.attention_mask[..., None].to(beta.dtype)
            beta, log_alpha = beta * keep, log_alpha * keep
        heads_first = (t_.transpose(1, 2) for t_ in (q, k, v, log_alpha, beta))
        return (*heads_first, z.reshape(b_, t, self.hv, self.v), conv_state)

    def _out(self, o: Tensor, z: Tensor) -> Tensor:
        return self.out_proj(self.norm(o.transpose(1, 2), z).flatten(2))

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        if (y := segmented_forward(self, x, ctx)) is not None:
            return y
        q, k, v, log_alpha, beta, z, _ = self._inner(x, ctx, None)
        kernel = self.triton_kernels.get("delta_chunk")
        if kernel is not None:
            o = kernel(q, k, v, log_alpha, beta, self.params.chunk)
        else:
            o, _ = chunk_gated_delta_rule(q, k, v, log_alpha, beta, chunk=self.params.chunk)
        return self._out(o.to(x.dtype), z)

    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        q, k, v, log_alpha, beta, z, conv = self._inner(x, ctx, state[0])
        kernel = self.triton_kernels.get("recurrent_step")
        if x.shape[1] == 1 and kernel is not None and not torch.is_grad_enabled():  # decoding: one launch
            o, s = kernel(q[:, :, 0], k[:, :, 0], v[:, :, 0], log_alpha[:, :, 0], beta[:, :, 0], state[1])
            o = o[:, :, None]
        elif x.shape[1] == 1:  # one token: the recurrence itself
            o, s = gated_delta_rule_step(q[:, :, 0], k[:, :, 0], wide(v[:, :, 0]), log_alpha[:, :, 0],
                                         beta[:, :, 0], state[1])
            o = o[:, :, None]
        else:
            o, s = chunk_gated_delta_rule(q, k, v, log_alpha, beta, state[1], chunk=self.params.chunk)
        return self._out(o.to(x.dtype), z), (wide(conv), s)
