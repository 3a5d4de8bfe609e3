"""Export-readiness: `torch.export` of the full forward with dynamic batch and sequence (run at
lengths other than the traced one), of `step` with a dynamic cache, and `torch.compile`."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

import archc
from archc.backends.torch import BackendError, build
from tests.conftest import SPECS


class _Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        return self.model(ids).logits


class _Step(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids, pos, *state):
        return self.model.step(ids, pos, tuple(state))


def _buildable(spec):
    graph = archc.load(str(spec)).graph
    try:
        model = build(graph, seed=0).eval()
    except BackendError:
        return None
    if model.num_parameters() > 20_000_000:
        return None
    return model


def _vocab(model):
    return min(model.out_type_vocab(), 256) if model.head == "lm_head" else 100


@pytest.mark.parametrize("spec", [s for s in SPECS if "tiny" in s.stem or s.stem in ("gated-conv-lm",)],
                         ids=lambda p: p.stem)
def test_forward_exports_with_dynamic_batch_and_length(spec):
    model = _buildable(spec)
    if model is None or len(model.input_names) != 1:
        pytest.skip("not built by the torch backend yet")
    batch, seq = Dim("batch", min=1, max=64), Dim("seq", min=2, max=1024)
    ids = torch.randint(0, _vocab(model), (2, 24))
    ep = torch.export.export(_Logits(model), (ids,), dynamic_shapes={"ids": {0: batch, 1: seq}})
    for b, t in ((1, 7), (3, 50), (2, 129)):
        x = torch.randint(0, _vocab(model), (b, t))
        torch.testing.assert_close(ep.module()(x), model(x).logits, atol=1e-5, rtol=1.3e-6)


@pytest.mark.parametrize("extra", ["", ", window=6"], ids=["full-cache", "ring-buffer"])
def test_step_exports_with_dynamic_cache(extra):
    spec = f"""
model t(tokens) {{
  block decoder(x) {{
    x = x + attention(rmsnorm(x), heads=4, kv_heads=2, causal=true, pos=rope(){extra})
    return x + swiglu(rmsnorm(x), hidden=64)
  }}
  x = embed(tokens, 64, 32)
  x = repeat(2, decoder)(x)
  return lm_head(rmsnorm(x), tied=true)
}}"""
    model = build(archc.loads(spec, "t.arch").graph, seed=0).eval()
    state = model.init_state(2, 16)
    ids = torch.randint(0, 64, (2, 1))
    pos = torch.tensor(3)
    batch, cache = Dim("batch", min=1, max=64), Dim("cache", min=2, max=4096)
    # a ring buffer's length is the window, fixed by the spec; a full cache's is max_len, dynamic
    dyn = tuple({0: batch} if extra else {0: batch, 2: cache} for _ in state)
    ep = torch.export.export(_Step(model), (ids, pos, *state), dynamic_shapes=({0: batch}, None, dyn))
    # decode a sequence with the exported step and compare with the model's own forward
    seq = torch.randint(0, 64, (3, 20))
    st = model.init_state(3, 24)
    outs = []
    for i in range(20):
        lg, st = ep.module()(seq[:, i:i + 1], torch.tensor(i), *st)
        outs.append(lg)
    torch.testing.assert_close(torch.cat(outs, 1), model(seq).logits, atol=1e-5, rtol=1.3e-6)


def test_compile_matches_eager():
    model = build("specs/llama-tiny.arch", seed=0).eval()
    compiled = torch.compile(model, dynamic=True)
    ids = torch.randint(0, 4096, (2, 33))
    torch.testing.assert_close(compiled(ids).logits, model(ids).logits, atol=1e-4, rtol=1e-4)
    out = compiled(ids, labels=ids)
    out.loss.backward()
    assert model.get_parameter("embed.weight").grad is not None
