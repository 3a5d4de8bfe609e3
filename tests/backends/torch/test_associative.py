"""ARMT's associative-memory layer: its reads against the update rule token by token on the module's
own projections; decoding = forward across segment boundaries (prefills from a segment's start take
the segment scan); right padding; a short training run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import archc
from archc.backends.torch import build
from archc.backends.torch.kernels.associative import dpfp, naive_associative
from tests.conftest import assert_step_matches_forward, assert_trains


def _model():
    spec = """
model m(tokens) {
  x = embed(tokens, 64, 32)
  x = x + associative_memory(rmsnorm(x), segment=6, key_dim=8, nu=2)
  x = x + attention(rmsnorm(x), heads=2, causal=true, window=6, pos=rope())
  return lm_head(rmsnorm(x))
}
"""
    model = build(archc.loads(spec, "m.arch").graph, seed=0).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.2)
    return model


def test_layer_equals_the_update_rule():
    layer = next(m for _, m in _model().op_modules() if m.op == "associative_memory")
    x = torch.randn(2, 29, 32)
    with torch.no_grad():
        q, k = dpfp(F.linear(x, layer.W_mq.weight), 2), dpfp(F.linear(x, layer.W_mk.weight), 2)
        beta = torch.sigmoid(F.linear(x, layer.W_mb.weight, layer.W_mb.bias))[..., 0]
        want = naive_associative(q, k, F.linear(x, layer.W_mv.weight), beta, 6, 1e-5)
        torch.testing.assert_close(layer(x), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunks", [(37,), (1,) * 12 + (25,), (5, 7, 1, 1, 23)], ids=["prefill", "tokens", "mixed"])
def test_decoding_equals_the_forward(chunks):
    assert_step_matches_forward(_model(), torch.randint(0, 64, (2, 37)), chunks, atol=2e-5, rtol=1e-4)


def test_right_padding_writes_nothing():
    model = _model()
    ids = torch.randint(0, 64, (2, 20))
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, 15:] = False
    with torch.no_grad():
        torch.testing.assert_close(model(ids, attention_mask=mask).logits[1, :15], model(ids[1:, :15]).logits[0],
                                   atol=2e-5, rtol=1e-4)


def test_trains():
    assert_trains(_model(), vocab=64)
