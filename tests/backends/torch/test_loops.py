"""loops.py's `segmented_forward` (its `exported_time_loop` is exercised by the LSTM/GRU, sLSTM
and S4 DPLR export tests): long eager-inference forwards of the recurrent mixers run as consecutive
`step`s of SEGMENT tokens; the result must be the whole-sequence forward's (which runs whenever
autograd is on), padding masks included."""

from __future__ import annotations

import pytest
import torch

import archc
from archc.backends.torch import build, loops

MIXERS = ["mamba(x, d_state=8)", "mamba2(x, d_state=8, head_dim=16, chunk=8)", "retention(x, heads=2, chunk=8)",
          "rwkv_time_mix(x, version=4)", "rwkv_time_mix(x, version=6, head_size=16, mix_rank=4, decay_rank=8)",
          "mlstm(x, heads=2)", "gated_deltanet(x, heads=2, head_dim=8, chunk=8)"]


@pytest.mark.parametrize("mixer", MIXERS, ids=lambda m: m.split("(")[0] + ("6" if "version=6" in m else ""))
def test_segments_equal_the_whole_forward(mixer, monkeypatch):
    spec = f"""
model t(tokens) {{
  x = embed(tokens, 64, 32)
  x = x + {mixer.replace("(x", "(layernorm(x)", 1)}
  return lm_head(layernorm(x))
}}"""
    # fp64, so that the CPU's fp32 kernels do not decide the result; the declared states stay fp32
    # (they are allocated so), which rounds the carried state at each of the 5 segment boundaries:
    # ~1e-7 relative, hence 1e-6
    model = build(archc.loads(spec, "t.arch").graph, seed=0).eval().double()
    monkeypatch.setattr(loops, "SEGMENT", 8)
    op = mixer.split("(")[0]
    (mod,) = (m for m in model.modules() if getattr(m, "op", "") in (op, f"{op}_packed"))
    calls = []
    step = mod.step
    monkeypatch.setattr(mod, "step", lambda *a, **k: calls.append(1) or step(*a, **k))
    ids = torch.randint(0, 64, (2, 45))
    mask = torch.ones(2, 45, dtype=torch.bool)
    mask[1, 30:] = False  # right padding
    whole = model(ids, attention_mask=mask).logits  # autograd on: one pass over the sequence
    with torch.no_grad():
        pieces = model(ids, attention_mask=mask).logits  # 6 steps of 8 tokens
    assert len(calls) == 6
    torch.testing.assert_close(pieces, whole, atol=1e-6, rtol=1e-6)


class _Recurrence(torch.nn.Module):
    """h_t = tanh(W h_{t−1} + x_t), outputs h_t and 2·h_t, through `exported_time_loop`."""

    def __init__(self, as_scan: bool, reverse: bool) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(4, 4) * 0.5)
        self.as_scan, self.reverse = as_scan, reverse

    def step(self, x, carry):
        h = torch.tanh(carry[0] @ self.w.T + x)
        return (h, 2 * h), (h,)

    def forward(self, x):
        if not torch.compiler.is_exporting():
            h, ys = torch.zeros(x.shape[0], 4), []
            for t in (reversed(range(x.shape[1])) if self.reverse else range(x.shape[1])):
                (y, _), (h,) = self.step(x[:, t], (h,))
                ys.append((t, y))
            return torch.stack([y for _, y in sorted(ys, key=lambda p: p[0])], 1), h
        out = (torch.zeros_like(x), torch.zeros_like(x))
        (y, _), (h,) = loops.exported_time_loop(self.step, x, (x.new_zeros(x.shape[0], 4),), out,
                                                reverse=self.reverse, as_scan=self.as_scan)
        return y, h


@pytest.mark.parametrize("as_scan", [False, True], ids=["while_loop", "scan"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_exported_time_loop_keeps_the_length_dynamic(as_scan, reverse):
    """Both forms of the exported loop equal the Python loop at lengths other than the traced one,
    outputs at their positions when running right to left."""
    from torch.export import Dim

    torch.manual_seed(0)
    mod = _Recurrence(as_scan, reverse)
    ep = torch.export.export(mod, (torch.randn(2, 6, 4),), dynamic_shapes=({1: Dim("t", min=2, max=1000)},))
    for t in (2, 9, 31):
        x = torch.randn(2, t, 4)
        for got, want in zip(ep.module()(x), mod(x), strict=True):
            torch.testing.assert_close(got, want)
