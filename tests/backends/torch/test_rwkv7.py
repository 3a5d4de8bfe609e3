"""RWKV-7's layers: the time-mix against RWKV-LM's x070 `RWKV_Tmix_x070.forward` written out from
its definition — its own parametrization of the decay (w = −softplus(−(w₀ + tanh(x_w W₁) W₂)) −
1/2, w ← exp(−exp(w))) and its reference WKV loop in the [V, K] layout — on the module's own
weights; the channel mix against RWKV7FeedForward's definition; decoding against the forward;
padding; a short training run. The recurrence's forms are in kernels/test_rwkv7.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import archc
from archc.backends.torch import build
from tests.conftest import assert_padding_is_exact, assert_step_matches_forward, assert_trains

SPEC = """
model m(tokens) {
  x = embed(tokens, 64, 32)
  x = x + rwkv7_time_mix(layernorm(x), head_dim=8, decay_rank=4, a_rank=4, gate_rank=8, chunk=8)
  x = x + rwkv7_channel_mix(layernorm(x), hidden=64)
  return lm_head(layernorm(x))
}
"""


def _model():
    model = build(archc.loads(SPEC, "m.arch").graph, seed=0).eval()
    with torch.no_grad():  # off the constant inits (zero first layers, k_a = 1), so a swapped tensor shows
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    return model


def _layer(model, op):
    return next(m for _, m in model.op_modules() if m.op == op)


def _reference_time_mix(layer, x):
    """RWKV-LM RWKV-v7 `RWKV_Tmix_x070.forward` (the first layer: no value residual) with its
    token-by-token WKV reference."""
    b, t, c = x.shape
    h, n = layer.h, layer.hd
    lin = lambda y, m: F.linear(y, m.weight, m.bias)  # noqa: E731
    xx = F.pad(x, (0, 0, 1, -1)) - x
    xr, xw, xk, xv, xa, xg = (x + xx * getattr(layer, f"x_{n_}") for n_ in "rwkvag")
    r, k, v = lin(xr, layer.r_proj), lin(xk, layer.k_proj), lin(xv, layer.v_proj)
    w1, w2 = layer.w_lora.lora[0].weight, layer.w_lora.lora[2]
    w = -F.softplus(-(w2.bias + torch.tanh(xw @ w1.T) @ w2.weight.T)) - 0.5
    a = torch.sigmoid(lin(lin(xa, layer.a_lora.lora[0]), layer.a_lora.lora[2]))
    g = torch.sigmoid(xg @ layer.g_lora.lora[0].weight.T) @ layer.g_lora.lora[2].weight.T
    kk = F.normalize((k * layer.k_k).view(b, t, h, -1), dim=-1, p=2.0).view(b, t, c)
    k = k * (1 + (a - 1) * layer.k_a)
    w = torch.exp(-torch.exp(w))
    state = torch.zeros(b, h, n, n, dtype=x.dtype)  # [V, K]
    out = []
    for i in range(t):
        per = lambda y, i=i: y[:, i].view(b, h, n)  # noqa: E731
        vk = per(v)[..., :, None] @ per(k)[..., None, :]
        ab = (-per(kk))[..., :, None] @ (per(kk) * per(a))[..., None, :]
        state = state * per(w)[..., None, :] + state @ ab + vk
        out.append((state @ per(r)[..., None])[..., 0])
    y = torch.stack(out, 1).reshape(b * t, c)
    y = F.group_norm(y, h, layer.g_norm.weight, layer.g_norm.bias, eps=layer.g_norm.eps).view(b, t, c)
    y = y + ((r.view(b, t, h, -1) * k.view(b, t, h, -1) * layer.r_k).sum(-1, keepdim=True) * v.view(b, t, h, -1)).view(b, t, c)
    return lin(y * g, layer.o_proj)


@pytest.mark.parametrize("t", [1, 13, 40])
def test_time_mix_equals_rwkv_lm(t):
    layer = _layer(_model(), "rwkv7_time_mix")
    x = torch.randn(2, t, 32)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), _reference_time_mix(layer, x), atol=1e-5, rtol=1e-5)


def test_channel_mix_equals_rwkv7_feed_forward():
    layer = _layer(_model(), "rwkv7_channel_mix")
    x = torch.randn(2, 9, 32)
    shifted = F.pad(x, (0, 0, 1, -1))
    want = F.linear(torch.relu(F.linear(x + (shifted - x) * layer.x_k, layer.key.weight)) ** 2, layer.value.weight)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), want)


@pytest.mark.parametrize("chunks", [(37,), (1,) * 12 + (25,), (5, 16, 1, 1, 14)], ids=["prefill", "tokens", "mixed"])
def test_decoding_equals_the_forward(chunks):
    assert_step_matches_forward(_model(), torch.randint(0, 64, (2, 37)), chunks, atol=2e-5, rtol=1e-4)


def test_padding_neither_writes_nor_decays_the_memory():
    assert_padding_is_exact(_model(), vocab=64)


def test_trains():
    assert_trains(_model(), vocab=64)
