"""The Hyena operator (Poli et al. 2023), laid out as the safari repository's
`standalone_hyena.py` (`HyenaOperator`, `HyenaFilter`) so that checkpoints map one to one:

    u = in_proj(x) → [B, (N+1)E, T];  uc = causal depthwise short_filter(u)
    x⁰ … x^{N−1}, v = split(uc)
    h = window(t) ⊙ implicit_filter(z_t)  [(N−1)E, T]   (Sin-activated MLP over the encoding z;
        window exp(−t·|deltas|) + shift, t ∈ [0, 1] over max_len)
    for x^i in x^{N−1}, …, x¹:  v = long_conv(v ⊙ x^i, h_i) + β_i ⊙ (v ⊙ x^i)      (`kernels/hyena`)
    out = out_proj(v ⊙ x⁰)

Padded positions are zeroed before and after the short filter (v = x = 0 there), so left padding neither
feeds the long convolutions nor shifts the filter's lags (h depends on the lag only). Departure
from safari: its filter MLP applies one shared `Sin` module (one set of frequencies) after every
layer; here each sine layer has its own `freq` (safari's checkpoints, which store the shared
tensor under each layer's name, load one to one and compute the same function). Init: safari's
(PyTorch's default Linear init in the filter MLP, frequencies `sin_freq`, β ~ N(0, 1), the encoding
and decay rates as defined), in_proj/out_proj archc's N(0, 0.02). State: `conv` [B, (N+1)E, k],
`history` [B, N−1, max_len, E] (fp32).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from archc.backends.torch.context import Context, tracing
from archc.backends.torch.init import Init
from archc.backends.torch.kernels.hyena import fft_long_conv, long_conv_step
from archc.backends.torch.layers import causal_depthwise_conv, init_conv
from archc.backends.torch.module import OpModule, State
from archc.backends.torch.registry import implements


class Sin(torch.nn.Module):
    """safari's `Sin`: sin(freq ⊙ x), with trained frequencies `freq` [1, f]."""

    def __init__(self, freq: torch.nn.Parameter) -> None:
        super().__init__()
        self.freq = freq

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(self.freq * x)


class HyenaFilter(torch.nn.Module):
    """The implicit long filters: `pos_emb.z`, `implicit_filter`, `modulation.deltas`, `bias` (β)."""

    def __init__(self, make, inner_mlps: int, shift: float) -> None:
        super().__init__()
        self.bias = make("filter_fn.bias")
        self.pos_emb = torch.nn.Module()
        self.pos_emb.z = make("filter_fn.pos_emb.z")
        layers: list[torch.nn.Module] = []
        for i in range(inner_mlps + 1):
            layers += [make(f"filter_fn.implicit_filter.{2 * i}", linear=True),
                       Sin(make(f"filter_fn.implicit_filter.{2 * i + 1}.freq"))]
        layers.append(make(f"filter_fn.implicit_filter.{2 * inner_mlps + 2}", linear=True))
        self.implicit_filter = torch.nn.Sequential(*layers)
        self.modulation = torch.nn.Module()
        self.modulation.deltas = make("filter_fn.modulation.deltas")
        self.modulation.deltas.requires_grad_(False)  # safari's buffer: fixed decay rates
        self.shift = shift

    def filter(self, length: int) -> Tensor:
        """h [(N−1)E, length], lag 0 first: the MLP over the encoding's first `length` rows, windowed."""
        z = self.pos_emb.z[:, :length]
        t = torch.arange(length, device=z.device, dtype=z.dtype)[None, :, None] / max(self.pos_emb.z.shape[1] - 1, 1)
        h = self.implicit_filter(z) * (torch.exp(-t * self.modulation.deltas.abs()) + self.shift)
        return h[0].t()


@implements("hyena")
class Hyena(OpModule):
    """`hyena(x, max_len, order, inner, filter_order, emb_dim, inner_mlps, short_filter, …)`; see
    the module docstring."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.e, self.n, self.max_len = p.width(in_types[0].width), p.order, p.max_len
        self.in_proj, self.out_proj = self.make_linear("in_proj"), self.make_linear("out_proj")
        self.short_filter = self.make_conv1d("short_filter")
        self.filter_fn = HyenaFilter(lambda name, linear=False: self.make_linear(name) if linear
                                     else self.make_parameter(name), p.inner_mlps, p.shift)

    def init_weights(self, init: Init) -> None:
        init.default(self)
        init_conv(self.short_filter, init)
        p = self.params
        for layer in self.filter_fn.implicit_filter:
            if isinstance(layer, torch.nn.Linear):  # PyTorch's default Linear init, as safari's
                bound = 1 / math.sqrt(layer.in_features)
                init.uniform_(layer.weight, -bound, bound)
                if layer.bias is not None:
                    init.uniform_(layer.bias, -bound, bound)
            else:
                with torch.no_grad():
                    layer.freq.fill_(p.sin_freq)
        init.normal_(self.filter_fn.bias, std=1.0)
        length, bands = p.max_len, (p.emb_dim - 1) // 2
        t = torch.linspace(0, 1, length)[None, :, None]
        w = 2 * math.pi * torch.linspace(0, length - 1, length)[None, :, None] / length
        f = torch.linspace(1e-4, bands - 1, bands)[None, None]
        slow, fast = p.decay_range()
        with torch.no_grad():  # safari's PositionalEmbedding [t, Re e^{−ifw}, Im e^{−ifw}], ExponentialModulation
            self.filter_fn.pos_emb.z.copy_(torch.cat((t, torch.cos(f * w), -torch.sin(f * w)), -1))
            self.filter_fn.modulation.deltas.copy_(torch.linspace(slow, fast, self.filter_fn.modulation.deltas.shape[-1]))

    def _gates(self, x: Tensor, ctx: Context | None, conv: Tensor | None) -> tuple[list[Tensor], Tensor, Tensor]:
        """(the gates x⁰ … x^{N−1} [B, E', T], v, the short filter's new state)."""
        u = self.in_proj(x).transpose(1, 2)
        keep = None if ctx is None or ctx.attention_mask is None else ctx.attention_mask[:, None, :].to(u.dtype)
        if keep is not None:  # padded inputs read as the short filter's zero left context ...
            u = u * keep
        u, conv = causal_depthwise_conv(u, self.short_filter, conv)
        if keep is not None:  # ... and padded outputs (its bias) feed neither the gates nor the history
            u = u * keep
        *gates, v = u.chunk(self.n + 1, dim=1)
        return gates, v, conv

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        t = x.shape[1]
        if not tracing() and t > self.max_len:
            raise ValueError(f"hyena takes at most max_len={self.max_len} tokens (its filters are built for that "
                             f"many lags); got {t}")
        gates, v, _ = self._gates(x, ctx, None)
        h = self.filter_fn.filter(t).chunk(self.n - 1, dim=0)
        beta = self.filter_fn.bias.chunk(self.n - 1)
        for o, gate in enumerate(reversed(gates[1:])):
            v = fft_long_conv(v * gate, h[o], beta[o]).to(x.dtype)
        return self.out_proj((v * gates[0]).transpose(1, 2))

    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        gates, v, conv = self._gates(x, ctx, state[0])
        history = state[1]
        h = self.filter_fn.filter(history.shape[2]).chunk(self.n - 1, dim=0)
        beta = self.filter_fn.bias.chunk(self.n - 1)
        written = []
        for o, gate in enumerate(reversed(gates[1:])):
            y, hist = long_conv_step(history[:, o], (v * gate).transpose(1, 2), ctx.positions, h[o], beta[o])
            v = y.transpose(1, 2).to(x.dtype)
            written.append(hist)
        out = self.out_proj((v * gates[0]).transpose(1, 2))
        return out, (conv.float(), torch.stack(written, 1))


