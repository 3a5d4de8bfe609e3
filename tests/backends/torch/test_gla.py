"""GLA's layer: against flash-linear-attention's `GatedLinearAttention` written out from its
definition (the projections, the low-rank decay gate log σ(·)/τ, q scaled by 1/√K, the recurrence
token by token, the per-head RMSNorm gated by silu(g), o_proj) on the module's own weights;
decoding against the forward; padding; a short training run. The recurrence's forms are in
kernels/test_gla.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import archc
from archc.backends.torch import build
from archc.backends.torch.kernels.gla import naive_gla
from tests.conftest import assert_padding_is_exact, assert_step_matches_forward, assert_trains

SPEC = """
model m(tokens) {
  x = embed(tokens, 64, 32)
  x = x + gla(rmsnorm(x), heads=2, expand_k=0.5, expand_v=1, gate_rank=4, chunk=8)
  return lm_head(rmsnorm(x))
}
"""


def _model():
    model = build(archc.loads(SPEC, "m.arch").graph, seed=0).eval()
    with torch.no_grad():  # off the constant inits (zero bias, unit norm), so a swapped tensor shows
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    return model


def _reference(layer, x):
    """flash-linear-attention's GatedLinearAttention.forward (fuse_norm, output gate, no feature
    map, no short conv), from its definition."""
    h, k, v = layer.h, layer.k, layer.v
    heads = lambda y, w: y.unflatten(-1, (h, w)).transpose(1, 2)  # noqa: E731
    q = heads(F.linear(x, layer.q_proj.weight), k) * k ** -0.5
    key, val = heads(F.linear(x, layer.k_proj.weight), k), heads(F.linear(x, layer.v_proj.weight), v)
    gk = F.linear(F.linear(x, layer.gk_proj[0].weight), layer.gk_proj[1].weight, layer.gk_proj[1].bias)
    log_a = heads(F.logsigmoid(gk) / layer.params.gate_normalizer, k)
    o, _ = naive_gla(q, key, val, log_a)
    o = o.transpose(1, 2)  # [B, T, H, V]
    g = F.linear(x, layer.g_proj.weight).unflatten(-1, (h, v))
    normed = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + layer.params.norm_eps) * layer.g_norm_swish_gate.weight
    return F.linear((normed * g * torch.sigmoid(g)).flatten(2), layer.o_proj.weight)


@pytest.mark.parametrize("t", [1, 13, 40])
def test_layer_equals_gated_linear_attention(t):
    layer = next(m for _, m in _model().op_modules() if m.op == "gla")
    x = torch.randn(2, t, 32)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), _reference(layer, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunks", [(37,), (1,) * 12 + (25,), (5, 16, 1, 1, 14)], ids=["prefill", "tokens", "mixed"])
def test_decoding_equals_the_forward(chunks):
    assert_step_matches_forward(_model(), torch.randint(0, 64, (2, 37)), chunks, atol=2e-5, rtol=1e-4)


def test_padding_neither_writes_nor_decays_the_memory():
    assert_padding_is_exact(_model(), vocab=64)


def test_trains():
    assert_trains(_model(), vocab=64)
