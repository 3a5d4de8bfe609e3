"""The kNN-memory layer: its output against the definition (`kernels/knn_attention/naive.py`) on
the module's own projections, with the faiss index; decoding = forward across segment boundaries;
right padding (and left padding within a segment); a short training run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import archc
from archc.backends.torch import build
from archc.backends.torch.kernels.knn_attention import naive_knn_attention
from tests.conftest import assert_step_matches_forward, assert_trains

pytest.importorskip("faiss")


def _model(index: str = "torch", segment: int = 6):
    spec = f"""
model m(tokens) {{
  x = embed(tokens, 64, 32)
  x = x + attention(rmsnorm(x), heads=2, causal=true, pos=rope())
  x = x + knn_attention(rmsnorm(x), heads=2, topk=4, segment={segment}, index="{index}")
  return lm_head(rmsnorm(x))
}}
"""
    model = build(archc.loads(spec, "m.arch").graph, seed=0).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    return model


@pytest.mark.parametrize("index", ["torch", "faiss"])
def test_layer_equals_the_definition(index):
    """In fp64: exact top-k is discontinuous, so fp32 near-ties could pick other keys on another CPU."""
    layer = next(m for _, m in _model(index).double().op_modules() if m.op == "knn_attention")
    x = torch.randn(2, 29, 32, dtype=torch.float64)
    b, t, _ = x.shape
    heads = lambda y: y.view(b, t, 2, 16).transpose(1, 2)  # noqa: E731
    q = F.normalize(heads(F.linear(x, layer.q_proj.weight)), dim=-1) * layer.log_scale.exp()[:, None, None]
    k = F.normalize(heads(F.linear(x, layer.k_proj.weight)), dim=-1)
    v = heads(F.linear(x, layer.v_proj.weight))
    with torch.no_grad():
        y = naive_knn_attention(q, k, v, layer.gate, 6, 4)
        want = F.linear(y.transpose(1, 2).reshape(b, t, 32), layer.o_proj.weight)
        torch.testing.assert_close(layer(x), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunks", [(37,), (1,) * 12 + (25,), (5, 6, 1, 1, 24)], ids=["prefill", "tokens", "mixed"])
def test_decoding_equals_the_forward(chunks):
    """In fp64, as above: the step's and the forward's top-k must not differ by a rounding near-tie."""
    assert_step_matches_forward(_model().double(), torch.randint(0, 64, (2, 37)), chunks, atol=1e-9, rtol=1e-9)


def test_padding():
    """Right padding is exact; left padding moves the segment boundaries (they are absolute
    positions), so it is exact when the sequence fits one segment."""
    model = _model()
    ids = torch.randint(0, 64, (2, 20))
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, 15:] = False
    with torch.no_grad():
        torch.testing.assert_close(model(ids, attention_mask=mask).logits[1, :15], model(ids[1:, :15]).logits[0],
                                   atol=2e-5, rtol=1e-4)
    one = _model(segment=64)
    mask = torch.ones(1, 20, dtype=torch.bool)
    mask[0, :6] = False
    with torch.no_grad():
        torch.testing.assert_close(one(ids[:1], attention_mask=mask).logits[0, 6:], one(ids[:1, 6:]).logits[0],
                                   atol=2e-5, rtol=1e-4)


def test_trains():
    assert_trains(_model(), vocab=64)
