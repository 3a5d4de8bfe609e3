"""Classic recurrent cells: LSTM (Hochreiter & Schmidhuber, 1997; with forget gates, Gers et al.)
and GRU (Cho et al., 2014), single or bidirectional, stacked.

These recurrences are nonlinear in the state, so no chunked algebra replaces the loop over time;
they run as PyTorch's fused `torch.nn.LSTM` / `torch.nn.GRU` (one native op per call, which
`torch.export` keeps with a dynamic length and ONNX has as its own LSTM/GRU operators). Parameter
names and layouts are torch.nn's (`weight_ih_l0`, `weight_hh_l0_reverse`, …), gates in torch's
order (LSTM i, f, g, o; GRU r, z, n).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from archc.backends.torch.module import Context, Init, OpModule, State, tracing
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
        self.state_names = () if p.bidirectional else self.cells

    def init_weights(self, init: Init) -> None:
        bound = 1 / math.sqrt(self.params.hidden)
        for w in self.rnn.parameters():
            init.uniform_(w, -bound, bound)

    def _run(self, x: Tensor, ctx: Context | None, hx) -> tuple[Tensor, object]:
        mask = None if ctx is None else ctx.attention_mask
        if mask is not None and not tracing() and not bool(mask.all()):
            packed = pack_padded_sequence(x, mask.sum(1).cpu(), batch_first=True, enforce_sorted=False)
            out, hx = self.rnn(packed, hx)
            return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0], hx
        return self.rnn(x, hx)

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        return self._run(x, ctx, None)[0]

    def init_state(self, batch: int, max_len: int, device: torch.device, dtype: torch.dtype) -> State:
        return tuple(torch.zeros(batch, self.params.layers, self.params.hidden, device=device)
                     for _ in self.state_names)

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


@implements("gru")
class GRU(_RNN):
    """GRU: r, z = σ(W x + U h + b), n = tanh(W_n x + b_in + r⊙(U_n h + b_hn)), h ← (1−z)⊙n + z⊙h."""

    cell = nn.GRU
    cells = ("h",)
