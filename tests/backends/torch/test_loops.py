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
    (mod,) = (m for m in model.modules() if getattr(m, "op", "") == mixer.split("(")[0])
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
