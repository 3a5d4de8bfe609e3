"""LSTM and GRU against their equations written token by token here (Hochreiter & Schmidhuber with
forget gates; Cho et al.), with the module's own weights; padding, decoding and export."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

import archc
from archc.backends.torch import build
from archc.backends.torch.context import Context
from tests.conftest import (
    assert_exported_step_matches_forward,
    assert_step_matches_forward,
    exportable_logits,
)

SPEC = """
model ref(tokens) {{
  x = embed(tokens, 64, 16)
  x = {cell}(x, hidden=12, layers={layers}, bidirectional={bidir})
  return {head}
}}
"""


def _model(cell: str, layers: int = 1, bidir: bool = False):
    head = "token_cls_head(x, classes=5)" if bidir else "lm_head(x)"
    text = SPEC.format(cell=cell, layers=layers, bidir=str(bidir).lower(), head=head)
    return build(archc.loads(text, "ref.arch").graph, seed=0).eval()


def _lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    i, f, g, o = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    xr, xz, xn = (x @ w_ih.T + b_ih).chunk(3, dim=-1)
    hr, hz, hn = (h @ w_hh.T + b_hh).chunk(3, dim=-1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h


def _by_equations(rnn, x, cell):
    """The stacked (bi)directional recurrence, one token at a time, in fp64."""
    x = x.double()
    for layer in range(rnn.num_layers):
        outs = []
        for suffix in ("", "_reverse")[: 2 if rnn.bidirectional else 1]:
            w = [getattr(rnn, f"{n}_l{layer}{suffix}").double() for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            h = x.new_zeros(x.shape[0], rnn.hidden_size)
            c = h.clone()
            order = range(x.shape[1]) if not suffix else range(x.shape[1] - 1, -1, -1)
            ys = [None] * x.shape[1]
            for t in order:
                if cell == "lstm":
                    h, c = _lstm_cell(x[:, t], h, c, *w)
                else:
                    h = _gru_cell(x[:, t], h, *w)
                ys[t] = h
            outs.append(torch.stack(ys, dim=1))
        x = torch.cat(outs, dim=-1)
    return x


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layers,bidir", [(1, False), (2, True)], ids=["1-layer", "2-layer-bidirectional"])
def test_cells_equal_their_equations(cell, layers, bidir):
    torch.manual_seed(0)
    mod = _model(cell, layers, bidir).get_submodule(cell)
    x = torch.randn(3, 9, 16)
    got = mod(x, ctx=Context(torch.arange(9)))
    torch.testing.assert_close(got.double(), _by_equations(mod.rnn, x, cell), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_right_padding_is_packed(cell):
    """The right-to-left direction starts at each sequence's last real token."""
    model = _model(cell, 2, True)
    ids = torch.randint(0, 64, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 7:] = 0
    got = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(got[1, :7], model(ids[1:, :7]).logits[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("chunks", [[21], [1, 1, 19], [5, 1, 15], [1] * 21], ids=lambda c: f"{len(c)}-steps")
def test_steps_equal_the_forward(cell, chunks):
    assert_step_matches_forward(_model(cell, 2), torch.randint(0, 64, (2, 21)), chunks, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_step_exports(cell):
    assert_exported_step_matches_forward(_model(cell, 2), 64, 8)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layers,bidir", [(2, False), (2, True)], ids=["causal", "bidirectional"])
def test_forward_exports_with_a_dynamic_length(cell, layers, bidir):
    """The exported forward (a while_loop over the tokens) equals torch.nn's fused cells."""
    model = _model(cell, layers, bidir)
    ep = torch.export.export(exportable_logits(model), (torch.randint(0, 64, (2, 10)),),
                             dynamic_shapes=({0: Dim("b", max=64), 1: Dim("t", min=2, max=4096)},))
    for b, t in ((1, 3), (3, 40)):
        x = torch.randint(0, 64, (b, t))
        torch.testing.assert_close(ep.module()(x), model(x).logits, atol=1e-5, rtol=1e-5)
