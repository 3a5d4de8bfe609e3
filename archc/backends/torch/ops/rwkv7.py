"""RWKV-7 "Goose" (Peng et al. 2025), laid out as flash-linear-attention's `RWKV7Attention` and
`RWKV7FeedForward` so that checkpoints map one to one (without the value residual's `v_lora`:
archc/ops/rwkv7.py says why):

    Δx = x_{t−1} − x;  x_• = x + Δx ⊙ x_•   (• ∈ r, w, k, v, a, g)
    r, k, v = r_proj(x_r), k_proj(x_k), v_proj(x_v)
    log w = −e^{−1/2} σ(w_lora(x_w))   (= −exp(−softplus(−w₀ − …) − 1/2), RWKV-LM's form)
    α = σ(a_lora(x_a));  g = g_lora(x_g) (sigmoid inside);  κ̂ = normalize_head(k ⊙ k_k)
    k ← k ⊙ (1 + (α − 1) ⊙ k_a);  o = rwkv7(r, w, k, v, a = −κ̂, b = κ̂ ⊙ α)
    out = o_proj((GroupNorm_H(o) + (Σ_head r ⊙ k ⊙ r_k) v) ⊙ g)

The recurrence is `kernels/rwkv7` (chunked form, step, naive reference). Padded positions get
k = b = 0 and log w = 0, so padding — left or right — neither writes nor decays the memory.
Init as RWKV-LM's x070 (layer l of L, n/A along the width): x_r, x_g = 1 − (i/d)^{0.2(1 − l/L)},
x_w, x_a = 1 − (i/d)^{0.9(1 − l/L)}, x_k, x_v = 1 − (i/d)^{0.7(1 − l/L)}; the decay bias
w₀ = −6.5 + 5 (n/(A−1))^{0.85 + √(l/(L−1))} (RWKV-LM's decay speed, +0.5 for its soft clamp);
k_k = 0.85, k_a = 1, r_k = −0.04, a₀ = 0, the maps' first layers 0 and second layers U(±0.01);
GroupNorm weight ((l + 1)/L)^0.7. The square maps take archc's default N(0, 0.02). State:
`shift` [B, d], `recurrent` [B, H, K, V] in fp32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from archc.backends.torch.context import Context
from archc.backends.torch.init import Init
from archc.backends.torch.kernels.common import wide
from archc.backends.torch.kernels.rwkv7 import chunk_rwkv7, rwkv7_step
from archc.backends.torch.layers import mask_padding
from archc.backends.torch.loops import segmented_forward
from archc.backends.torch.module import OpModule, State
from archc.backends.torch.ops.rwkv import token_shift
from archc.backends.torch.registry import implements

#: −e^{−1/2}: RWKV-7's soft clamp, log w = −exp(−softplus(−z) − 1/2) = −e^{−1/2} σ(z).
LOG_DECAY_SCALE = -math.exp(-0.5)


class LoRA(torch.nn.Module):
    """flash-linear-attention's `LoRA`: `lora` = Sequential(Linear d→r, activation, Linear r→out)."""

    def __init__(self, first: torch.nn.Linear, second: torch.nn.Linear, activation: torch.nn.Module) -> None:
        super().__init__()
        self.lora = torch.nn.Sequential(first, activation, second)

    def forward(self, x: Tensor) -> Tensor:
        return self.lora(x)


@implements("rwkv7_time_mix")
class TimeMix7(OpModule):
    """`rwkv7_time_mix(x, head_dim, hidden, decay_rank, a_rank, gate_rank, norm_eps, chunk)`; see
    the module docstring."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        d = in_types[0].width
        self.d, self.a, self.h, self.hd = d, p.width(d), p.heads(d), p.head_dim
        for n in "rwkvag":
            setattr(self, f"x_{n}", self.make_parameter(f"x_{n}"))
        self.k_k, self.k_a, self.r_k = (self.make_parameter(n) for n in ("k_k", "k_a", "r_k"))
        self.r_proj, self.k_proj, self.v_proj, self.o_proj = (
            self.make_linear(n) for n in ("r_proj", "k_proj", "v_proj", "o_proj"))
        lora = lambda name, act: LoRA(self.make_linear(f"{name}.lora.0"), self.make_linear(f"{name}.lora.2"), act)  # noqa: E731
        self.w_lora = lora("w_lora", torch.nn.Tanh())
        self.a_lora = lora("a_lora", torch.nn.Identity())
        self.g_lora = lora("g_lora", torch.nn.Sigmoid())
        self.g_norm = torch.nn.GroupNorm(self.h, self.a, eps=self.hd * p.norm_eps)

    def init_weights(self, init: Init) -> None:
        init.default(self)
        layer, layers = init.layer_index(self.op), init.op_counts[self.op]
        r01, r10 = layer / max(layers - 1, 1), 1.0 - layer / layers
        ddd = torch.arange(self.d, dtype=torch.float32).view(1, 1, -1) / self.d
        n = torch.arange(self.a, dtype=torch.float32) / max(self.a - 1, 1)
        for lora in (self.w_lora, self.a_lora, self.g_lora):
            init.uniform_(lora.lora[2].weight, -0.01, 0.01)
        with torch.no_grad():
            for name, power in (("r", 0.2), ("w", 0.9), ("k", 0.7), ("v", 0.7), ("a", 0.9), ("g", 0.2)):
                getattr(self, f"x_{name}").copy_(1 - ddd ** (power * r10))
            self.w_lora.lora[2].bias.copy_(-6.5 + 5 * n ** (0.85 + r01 ** 0.5))
            for lora in (self.w_lora, self.a_lora, self.g_lora):
                lora.lora[0].weight.zero_()
            self.k_k.fill_(0.85)
            self.k_a.fill_(1.0)
            self.r_k.fill_(-0.04)
            self.g_norm.weight.fill_(((layer + 1) / layers) ** 0.7)

    def _run(self, x: Tensor, ctx: Context | None, state: State | None) -> tuple[Tensor, State]:
        b, t, _ = x.shape
        x = mask_padding(x, ctx)
        dx = token_shift(x, None if state is None else state[0]) - x
        xr, xw, xk, xv, xa, xg = (x + dx * getattr(self, f"x_{n}") for n in "rwkvag")
        heads = lambda y: y.unflatten(-1, (self.h, self.hd)).transpose(1, 2)  # noqa: E731 — [B, H, T, K]
        r, k, v = self.r_proj(xr), self.k_proj(xk), self.v_proj(xv)
        log_w = LOG_DECAY_SCALE * torch.sigmoid(wide(self.w_lora(xw)))
        alpha = torch.sigmoid(self.a_lora(xa))
        kk = F.normalize((k * self.k_k).unflatten(-1, (self.h, self.hd)), dim=-1).flatten(2)
        k = k * (1 + (alpha - 1) * self.k_a)
        if ctx is not None and ctx.attention_mask is not None:  # padded tokens: no write, no decay
            keep = ctx.attention_mask[..., None]
            k, kk, log_w = k * keep.to(k.dtype), kk * keep.to(kk.dtype), log_w * keep.to(log_w.dtype)
        rh, wh, kh, vh, ah, bh = (heads(y) for y in (r, log_w, k, v, -kk, kk * alpha))
        if state is not None and t == 1:  # one token: the recurrence itself
            o, s = rwkv7_step(*(y[:, :, 0] for y in (rh, wh, kh, vh, ah, bh)), state[1])
            o = o[:, :, None]
        else:
            o, s = chunk_rwkv7(rh, wh, kh, vh, ah, bh, None if state is None else state[1], chunk=self.params.chunk)
        o = F.group_norm(o.transpose(1, 2).reshape(b * t, self.a), self.h, wide(self.g_norm.weight),
                         wide(self.g_norm.bias), self.g_norm.eps).view(b, t, self.a)
        bonus = ((r * k * self.r_k.flatten()).unflatten(-1, (self.h, self.hd)).sum(-1, keepdim=True)
                 * v.unflatten(-1, (self.h, self.hd))).flatten(2)
        return self.o_proj((o.to(x.dtype) + bonus) * self.g_lora(xg)), (x[:, -1].float(), s)

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        if (y := segmented_forward(self, x, ctx)) is not None:
            return y
        return self._run(x, ctx, None)[0]

    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        return self._run(x, ctx, state)


@implements("rwkv7_channel_mix")
class ChannelMix7(OpModule):
    """`rwkv7_channel_mix(x, hidden)`: out = value(relu(key(x + Δx ⊙ x_k))²), as
    flash-linear-attention's RWKV7FeedForward. Init: x_k = 1 − (i/d)^{(1 − l/L)⁴} (RWKV-LM x070).
    State: `shift` [B, d]."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.d = in_types[0].width
        self.x_k = self.make_parameter("x_k")
        self.key, self.value = self.make_linear("key"), self.make_linear("value")

    def init_weights(self, init: Init) -> None:
        init.default(self)
        layer, layers = init.layer_index(self.op), init.op_counts[self.op]
        with torch.no_grad():
            self.x_k.copy_(1 - (torch.arange(self.d, dtype=torch.float32) / self.d) ** ((1 - layer / layers) ** 4))

    def _run(self, x: Tensor, last: Tensor | None) -> Tensor:
        return self.value(torch.relu(self.key(x + (token_shift(x, last) - x) * self.x_k)).square())

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        return self._run(mask_padding(x, ctx), None)

    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        x = mask_padding(x, ctx)
        return self._run(x, state[0]), (x[:, -1].float(),)
