"""RWKV-4 time-mix and channel-mix (Peng et al., 2023, "RWKV: Reinventing RNNs for the Transformer
Era"), laid out as transformers' `RwkvSelfAttention` / `RwkvFeedForward` (the names of the RWKV-4
checkpoints: `time_decay`, `time_first`, `time_mix_*` [1, 1, d], `key`, `value`, `receptance`,
`output`); and RWKV-6's time-mix (Finch: Peng et al., 2024, "Eagle and Finch"), laid out as the
RWKV-LM x060 checkpoints (`time_maa_*`, `time_decay_w1`/`w2`, `time_faaaa`, `ln_x`, …).

Token shift mixes each token with the one before it (x_{t−1}: zeros at the start, the `shift`
state in `step`). The WKV recurrence is `scan.wkv4`, chunked and max-stabilized; its state is
the (num, den, max) triple of the reference kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archc.backends.torch.context import Context
from archc.backends.torch.init import Init
from archc.backends.torch.kernels.common import NEG, wide
from archc.backends.torch.kernels.wkv4 import wkv4, wkv4_step
from archc.backends.torch.kernels.wkv6 import wkv6, wkv6_step
from archc.backends.torch.loops import segmented_forward
from archc.backends.torch.module import OpModule, State
from archc.backends.torch.registry import BuildCtx, implements


def token_shift(x: Tensor, last: Tensor | None) -> Tensor:
    """x_{t−1} for every t of x [B, T, d]: `last` [B, d] (zeros if None) then x[:, :-1]."""
    if last is None:
        return F.pad(x, (0, 0, 1, -1))
    return torch.cat((last[:, None].to(x.dtype), x[:, :-1]), dim=1)


def _mix(x: Tensor, shifted: Tensor, ratio: Tensor) -> Tensor:
    return x * ratio + shifted * (1 - ratio)


def _ratios(d: int, exponent: float) -> Tensor:
    """(i/d)^exponent for i < d, RWKV-4's token-shift init (1 → ~0 through the layers)."""
    return (torch.arange(d, dtype=torch.float32) / d).pow(exponent).view(1, 1, d)


@implements("rwkv_time_mix")
class TimeMix(OpModule):
    """`rwkv_time_mix(x, version=4, hidden=A)`:

        k, v, r = key/value/receptance(mix(x, x_{t−1}, time_mix_*))
        out = output(σ(r) ⊙ wkv(w = exp(time_decay), u = time_first, k, v))

    Init as RWKV-4 (layer l of L): time_decay_h = −5 + 8·(h/(A−1))^(0.7 + 1.3·l/(L−1)),
    time_first = log 0.3 + zigzag (the original repository's; transformers' port keeps it at 1),
    time_mix_k = (i/d)^(1 − l/L), time_mix_v = that + 0.3·l/(L−1), time_mix_r = (i/d)^((1 − l/L)/2).
    State: `shift` [B, d], `num`, `den`, `max` [B, A] (fp32)."""


    @classmethod
    def build(cls, p, in_types, out_type, bctx: BuildCtx) -> TimeMix | TimeMix6:
        return (TimeMix6 if p.version == 6 else cls)(p, in_types, out_type)

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        d = in_types[0].width
        a = p.hidden or d
        self.d, self.a = d, a
        for name in ("time_decay", "time_first", "time_mix_key", "time_mix_value", "time_mix_receptance"):
            setattr(self, name, self.make_parameter(name))
        self.key, self.value, self.receptance, self.output = (
            self.make_linear(n) for n in ("key", "value", "receptance", "output"))

    def init_weights(self, init: Init) -> None:
        init.default(self)
        layer, layers = init.layer_index(self.op), init.op_counts[self.op]
        r01 = layer / max(layers - 1, 1)
        r10 = 1.0 - layer / layers
        h = torch.arange(self.a, dtype=torch.float32)
        zigzag = ((h + 1) % 3 - 1) * 0.5
        with torch.no_grad():
            self.time_decay.copy_(-5 + 8 * (h / max(self.a - 1, 1)) ** (0.7 + 1.3 * r01))
            self.time_first.copy_(torch.full_like(h, 0.3).log() + zigzag)
            self.time_mix_key.copy_(_ratios(self.d, r10))
            self.time_mix_value.copy_(_ratios(self.d, r10) + 0.3 * r01)
            self.time_mix_receptance.copy_(_ratios(self.d, 0.5 * r10))

    def _run(self, x: Tensor, ctx: Context | None, state: State | None) -> tuple[Tensor, State]:
        shifted = token_shift(x, None if state is None else state[0])
        k = self.key(_mix(x, shifted, self.time_mix_key))
        v = self.value(_mix(x, shifted, self.time_mix_value))
        r = torch.sigmoid(self.receptance(_mix(x, shifted, self.time_mix_receptance)))
        if ctx is not None and ctx.attention_mask is not None:  # padded tokens add nothing
            k = k.masked_fill(~ctx.attention_mask[..., None], NEG)
        w, u = self.time_decay.float().exp(), self.time_first.float()
        kernel = self.triton_kernels.get("wkv4_step")
        if state is not None and x.shape[1] == 1 and kernel is not None and not torch.is_grad_enabled():
            wkv, (num, den, m) = kernel(w, u, k[:, 0], v[:, 0], state[1:])  # decoding: one launch
            wkv = wkv[:, None]
        elif state is not None and x.shape[1] == 1:  # one token: the recurrence itself
            wkv, (num, den, m) = wkv4_step(w, u, k[:, 0], v[:, 0], state[1:])
            wkv = wkv[:, None]
        elif state is None and (scan := self.triton_kernels.get("wkv4_scan")) is not None:
            wkv, (num, den, m) = scan(w, u, k, v), (None, None, None)  # training: no state to hand on
        else:
            wkv, (num, den, m) = wkv4(w, u, k, v, None if state is None else state[1:])
        return self.output(r * wkv.to(x.dtype)), (x[:, -1].float(), num, den, m)

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        if (y := segmented_forward(self, x, ctx)) is not None:
            return y
        return self._run(x, ctx, None)[0]


    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        return self._run(x, ctx, state)


#: RWKV-6's ln_x epsilon: 1e-5 · head_size_divisor² with RWKV-LM's head_size_divisor 8.
LN_X_EPS = 64e-5


class TimeMix6(OpModule):
    """`rwkv_time_mix(x, version=6, head_size, mix_rank, decay_rank[, hidden])`, Finch's time-mix
    (attention width A = `hidden`, default d: H = A / head_size heads; `archc prune --heads` sets it):

        Δx = x_{t−1} − x;  m_{w,k,v,r,g} = tanh((x + Δx·maa_x) W₁) W₂ (one low-rank map, five outputs)
        x_• = x + Δx·(maa_• + m_•);  r, k, v = receptance/key/value(x_•);  g = silu(gate(x_g))
        log w = −exp(time_decay + tanh(x_w D₁) D₂)   (data-dependent decay per channel)
        out = output(GroupNorm_H(wkv6(r, k, v, w, u = time_faaaa)) ⊙ g)

    Names and init as RWKV-LM's x060 (layer l of L): maa_x/w/k = 1 − (i/d)^(1 − l/L),
    maa_v = that − 0.3·l/(L−1), maa_r/g = 1 − (i/d)^((1 − l/L)/2); W₁, D₁ zero and W₂, D₂
    U(±0.01); time_decay_n = −6 + 5·(n/(d−1))^(0.7 + 1.3·l/(L−1)); time_faaaa = (l/(L−1))·(1 −
    n/(d−1)) + zigzag·0.1. The square maps take archc's default N(0, 0.02) (output: the residual
    std), where RWKV-LM uses orthogonal/zero inits. State: `shift` [B, d], `wkv` [B, H, hs, hs]."""

    op = "rwkv_time_mix"  # built by `TimeMix.build` for version 6

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        d = in_types[0].width
        a = p.hidden or d  # the attention width: heads × head_size
        self.d, self.a, self.h, self.hs = d, a, a // p.head_size, p.head_size
        for name in ("x", "w", "k", "v", "r", "g", "w1", "w2"):
            setattr(self, f"time_maa_{name}", self.make_parameter(f"time_maa_{name}"))
        for name in ("time_decay", "time_decay_w1", "time_decay_w2", "time_faaaa"):
            setattr(self, name, self.make_parameter(name))
        self.receptance, self.key, self.value, self.gate, self.output = (
            self.make_linear(n) for n in ("receptance", "key", "value", "gate", "output"))
        self.ln_x = nn.GroupNorm(self.h, self.declared("ln_x.weight").shape[0], eps=LN_X_EPS)

    def init_weights(self, init: Init) -> None:
        init.default(self)
        init.uniform_(self.time_maa_w2, -0.01, 0.01)
        init.uniform_(self.time_decay_w2, -0.01, 0.01)
        layer, layers = init.layer_index(self.op), init.op_counts[self.op]
        r01, r10 = layer / max(layers - 1, 1), 1.0 - layer / layers
        ddd = torch.arange(self.d, dtype=torch.float32).view(1, 1, -1) / self.d
        n = torch.arange(self.a, dtype=torch.float32)
        with torch.no_grad():
            for name in ("x", "w", "k"):
                getattr(self, f"time_maa_{name}").copy_(1 - ddd ** r10)
            self.time_maa_v.copy_(1 - (ddd ** r10 + 0.3 * r01))
            self.time_maa_r.copy_(1 - ddd ** (0.5 * r10))
            self.time_maa_g.copy_(1 - ddd ** (0.5 * r10))
            self.time_maa_w1.zero_()
            self.time_decay_w1.zero_()
            self.time_decay.copy_((-6 + 5 * (n / max(self.a - 1, 1)) ** (0.7 + 1.3 * r01)).view(1, 1, -1))
            zigzag = ((n + 1) % 3 - 1) * 0.1
            self.time_faaaa.copy_((r01 * (1 - n / max(self.a - 1, 1)) + zigzag).view(self.h, self.hs))

    def _run(self, x: Tensor, ctx: Context | None, state: State | None) -> tuple[Tensor, State]:
        b, t, _ = x.shape
        dx = token_shift(x, None if state is None else state[0]) - x
        lora = torch.tanh((x + dx * self.time_maa_x) @ self.time_maa_w1).unflatten(-1, (5, -1))
        mw, mk, mv, mr, mg = torch.einsum("btfr,frd->fbtd", lora, self.time_maa_w2).unbind(0)
        xw, xk, xv, xr, xg = (x + dx * (getattr(self, f"time_maa_{n}") + m)
                              for n, m in zip("wkvrg", (mw, mk, mv, mr, mg), strict=True))
        heads = lambda y: y.unflatten(-1, (self.h, self.hs)).transpose(1, 2)  # noqa: E731 — [B, H, T, hs]
        r, k, v = heads(self.receptance(xr)), heads(self.key(xk)), heads(self.value(xv))
        if ctx is not None and ctx.attention_mask is not None:  # padded tokens add nothing
            k = k * ctx.attention_mask[:, None, :, None].to(k.dtype)
        g = F.silu(self.gate(xg))
        log_w = -(wide(self.time_decay) + wide(torch.tanh(xw @ self.time_decay_w1) @ self.time_decay_w2)).exp()
        log_w = heads(log_w)
        kernel = self.triton_kernels.get("recurrent_step")
        if state is not None and t == 1 and kernel is not None and not torch.is_grad_enabled():  # one launch
            y, wkv = kernel(r[:, :, 0], k[:, :, 0], v[:, :, 0], log_w[:, :, 0], self.time_faaaa, state[1])
            y = y[:, :, None]
        elif state is not None and t == 1:  # one token: the recurrence itself
            y, wkv = wkv6_step(r[:, :, 0], k[:, :, 0], v[:, :, 0], log_w[:, :, 0], self.time_faaaa, state[1])
            y = y[:, :, None]
        elif state is None and (chunk_kernel := self.triton_kernels.get("wkv6_chunk")) is not None:
            y, wkv = chunk_kernel(r, k, v, log_w, self.time_faaaa), None  # training: no state to hand on
        else:
            y, wkv = wkv6(r, k, v, log_w, self.time_faaaa, None if state is None else state[1])
        y = F.group_norm(y.transpose(1, 2).reshape(b * t, self.a), self.h, wide(self.ln_x.weight),
                         wide(self.ln_x.bias), self.ln_x.eps).view(b, t, self.a)
        return self.output(y.to(x.dtype) * g), (x[:, -1].float(), wkv)

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        if (y := segmented_forward(self, x, ctx)) is not None:
            return y
        return self._run(x, ctx, None)[0]


    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        return self._run(x, ctx, state)


@implements("rwkv_channel_mix")
class ChannelMix(OpModule):
    """`rwkv_channel_mix(x, hidden)`: out = σ(receptance(mix_r)) ⊙ value(relu(key(mix_k))²), the
    token shift as in the time-mix. Init: time_mix_k = time_mix_r = (i/d)^(1 − l/L).
    State: `shift` [B, d]."""


    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        d = in_types[0].width
        self.d = d
        self.time_mix_key, self.time_mix_receptance = (self.make_parameter(f"time_mix_{n}") for n in ("key", "receptance"))
        self.key, self.receptance, self.value = (self.make_linear(n) for n in ("key", "receptance", "value"))

    def init_weights(self, init: Init) -> None:
        init.default(self)
        layer, layers = init.layer_index(self.op), init.op_counts[self.op]
        with torch.no_grad():
            self.time_mix_key.copy_(_ratios(self.d, 1.0 - layer / layers))
            self.time_mix_receptance.copy_(_ratios(self.d, 1.0 - layer / layers))

    def _run(self, x: Tensor, last: Tensor | None) -> Tensor:
        shifted = token_shift(x, last)
        k = torch.relu(self.key(_mix(x, shifted, self.time_mix_key))).square()
        return torch.sigmoid(self.receptance(_mix(x, shifted, self.time_mix_receptance))) * self.value(k)

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        return self._run(x, None)


    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        return self._run(x, state[0]), (x[:, -1].float(),)
