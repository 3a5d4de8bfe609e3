"""Classic recurrent cells: LSTM (Hochreiter & Schmidhuber, 1997; with forget gates, Gers et al.)
and GRU (Cho et al., 2014), single or bidirectional, stacked.

These recurrences are nonlinear in the state, so no chunked algebra replaces the loop over time;
they run as PyTorch's fused `torch.nn.LSTM` / `torch.nn.GRU` (one native op per call). Under
`torch.export`, which would unroll those ops over the traced length, the forward is a
`while_loop` over the tokens instead (the same equations; the length stays dynamic). Parameter
names and layouts are torch.nn's (`weight_ih_l0`, `weight_hh_l0_reverse`, …), gates in torch's
order (LSTM i, f, g, o; GRU r, z, n).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from archc.backends.torch.context import Context, reads_values
from archc.backends.torch.init import Init
from archc.backends.torch.loops import exported_time_loop
from archc.backends.torch.module import OpModule, State
from archc.backends.torch.registry import implements


class _RNN(OpModule):
    """`lstm(x, hidden, layers, bidirectional)` / `gru(...)`: the output is the last layer's
    hidden states [B, T, hidden·directions]. Right-padded batches (`attention_mask`) are packed
    in eager mode, so the right-to-left direction starts at each sequence's last real token.
    Init: torch.nn's U(±1/√hidden) for every weight and bias, from the seeded generator.
    State for `step` (causal only): the final h (and c) [B, layers, hidden], fp32."""

    cell: type[nn.RNNBase]
    cells: tuple[str, ...]

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.rnn = self.cell(in_types[0].width, p.hidden, num_layers=p.layers, bidirectional=p.bidirectional,
                             batch_first=True)

    def init_weights(self, init: Init) -> None:
        bound = 1 / math.sqrt(self.params.hidden)
        for w in self.rnn.parameters():
            init.uniform_(w, -bound, bound)

    #: One token of the cell, (gx, h, c, W_hh, b_hh) -> (h, c), gx the input's gate pre-activations.
    cell_step: Callable[..., tuple[Tensor, Tensor]]

    def _exported_forward(self, x: Tensor) -> Tensor:
        """The stacked recurrence as `exported_time_loop`s over the tokens, for `torch.export`
        (exporting `aten.lstm`/`aten.gru` unrolls them over the traced length, torch 2.13). The
        input projections of all tokens are one matmul per layer and direction."""
        rnn = self.rnn
        for layer in range(rnn.num_layers):
            outs = []
            for suffix in ("", "_reverse")[: 2 if rnn.bidirectional else 1]:
                w_ih, w_hh, b_ih, b_hh = (getattr(rnn, f"{n}_l{layer}{suffix}")
                                          for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

                def one(gx: Tensor, carry: tuple[Tensor, ...], w_hh=w_hh, b_hh=b_hh) -> tuple[Tensor, tuple[Tensor, ...]]:
                    h, c = self.cell_step(gx, *carry, w_hh, b_hh)
                    return h, (h, c)

                h0 = x.new_zeros(x.shape[0], rnn.hidden_size)
                out = x.new_zeros(x.shape[0], x.shape[1], rnn.hidden_size)
                outs.append(exported_time_loop(one, x @ w_ih.T + b_ih, (h0, h0), out, reverse=bool(suffix))[0])
            x = torch.cat(outs, dim=-1)
        return x

    def _run(self, x: Tensor, ctx: Context | None, hx) -> tuple[Tensor, object]:
        mask = None if ctx is None else ctx.attention_mask
        if mask is not None and reads_values() and not bool(mask.all()):
            packed = pack_padded_sequence(x, mask.sum(1).cpu(), batch_first=True, enforce_sorted=False)
            out, hx = self.rnn(packed, hx)
            return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0], hx
        return self.rnn(x, hx)

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        if torch.compiler.is_exporting():
            return self._exported_forward(x)
        return self._run(x, ctx, None)[0]


    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        hx = tuple(s.transpose(0, 1).to(x.dtype).contiguous() for s in state)
        out, new = self._run(x, ctx, hx if len(hx) > 1 else hx[0])
        new = new if isinstance(new, tuple) else (new,)
        return out, tuple(s.transpose(0, 1).float() for s in new)


@implements("lstm")
class LSTM(_RNN):
    """LSTM: i, f, o = σ(W x + U h + b), g = tanh(·), c ← f⊙c + i⊙g, h ← o⊙tanh(c)."""

    cell = nn.LSTM
    cells = ("h", "c")

    def cell_step(self, gx: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, b_hh: Tensor) -> tuple[Tensor, Tensor]:
        i, f, g, o = (gx + h @ w_hh.T + b_hh).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


@implements("gru")
class GRU(_RNN):
    """GRU: r, z = σ(W x + U h + b), n = tanh(W_n x + b_in + r⊙(U_n h + b_hn)), h ← (1−z)⊙n + z⊙h."""

    cell = nn.GRU
    cells = ("h",)

    def cell_step(self, gx: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, b_hh: Tensor) -> tuple[Tensor, Tensor]:
        xr, xz, xn = gx.chunk(3, dim=-1)
        hr, hz, hn = (h @ w_hh.T + b_hh).chunk(3, dim=-1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        return (1 - z) * torch.tanh(xn + r * hn) + z * h, c.clone()  # c: an unused carry (a loop may not alias)
