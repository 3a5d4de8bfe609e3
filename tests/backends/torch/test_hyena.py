"""Hyena's layer against safari's `standalone_hyena.py` written out from its definition (in_proj, the
padded depthwise Conv1d cut to length, the split into gates and v, the HyenaFilter — positional
encoding, Sin MLP, exponential modulation —, `fftconv` with its 2T FFT and norm="forward", the gating
loop over reversed(x[1:]), out_proj) on the module's own weights, at orders 2 and 3; its filter's
encoding and decay rates as safari builds them; decoding over the history against the forward;
padding; a short training run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import archc
from archc.backends.torch import build
from tests.conftest import assert_padding_is_exact, assert_step_matches_forward, assert_trains


def _spec(order: int) -> str:
    return f"""
model m(tokens) {{
  x = embed(tokens, 64, 32)
  x = x + hyena(layernorm(x), max_len=64, order={order}, filter_order=16)
  return lm_head(layernorm(x))
}}
"""


def _model(order: int = 2):
    model = build(archc.loads(_spec(order), "m.arch").graph, seed=0).eval()
    with torch.no_grad():  # off the constant inits, so a swapped tensor shows (the decay rates stay)
        for name, p in model.named_parameters():
            if "deltas" not in name:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    return model


def _layer(model):
    return next(m for _, m in model.op_modules() if m.op == "hyena")


def _fftconv(u, k, d):
    """safari's fftconv."""
    seqlen = u.shape[-1]
    fft_size = 2 * seqlen
    k_f = torch.fft.rfft(k, n=fft_size) / fft_size
    u_f = torch.fft.rfft(u.to(dtype=k.dtype), n=fft_size)
    y = torch.fft.irfft(u_f * k_f, n=fft_size, norm="forward")[..., :seqlen]
    return (y + u * d.unsqueeze(-1)).to(dtype=u.dtype)


def _reference(layer, u):
    """safari's HyenaOperator.forward with HyenaFilter.filter."""
    order, d_model, f = layer.n, layer.e, layer.filter_fn
    l_filter = u.shape[-2]
    u = F.linear(u, layer.in_proj.weight, layer.in_proj.bias).transpose(1, 2)
    uc = F.conv1d(u, layer.short_filter.weight, layer.short_filter.bias, padding=2, groups=u.shape[1])[..., :l_filter]
    *x, v = uc.split(d_model, dim=1)
    z, t = f.pos_emb.z[:, :l_filter], torch.linspace(0, 1, f.pos_emb.z.shape[1])[None, :l_filter, None]
    h = z
    for layer_ in f.implicit_filter:
        h = torch.sin(layer_.freq * h) if hasattr(layer_, "freq") else F.linear(h, layer_.weight, layer_.bias)
    h = h * torch.exp(-t * f.modulation.deltas.abs())
    k = h[0].t().reshape(order - 1, d_model, l_filter)
    bias = f.bias.reshape(order - 1, d_model)
    for o, x_i in enumerate(reversed(x[1:])):
        v = _fftconv(v * x_i, k[o], bias[o])
    return F.linear((v * x[0]).transpose(1, 2), layer.out_proj.weight, layer.out_proj.bias)


@pytest.mark.parametrize("order", [2, 3])
def test_layer_equals_safari_hyena_operator(order):
    layer = _layer(_model(order))
    x = torch.randn(2, 29, 32)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), _reference(layer, x), atol=1e-5, rtol=1e-5)


def test_filter_is_built_as_safari_builds_it():
    """PositionalEmbedding's z = [t, Re e^{−i f w}, Im e^{−i f w}] and ExponentialModulation's rates."""
    layer = _layer(build(archc.loads(_spec(2), "m.arch").graph, seed=0))
    length, bands = 64, 1
    t = torch.linspace(0, 1, length)[None, :, None]
    w = 2 * math.pi * torch.linspace(0, length - 1, length)[None, :, None] / length
    z = torch.exp(-1j * torch.linspace(1e-4, bands - 1, bands)[None, None] * w)
    torch.testing.assert_close(layer.filter_fn.pos_emb.z, torch.cat([t, z.real, z.imag], dim=-1))
    deltas = torch.linspace(math.log(1e-2) / 1.5, math.log(1e-2) / 0.3, 32)[None, None]
    torch.testing.assert_close(layer.filter_fn.modulation.deltas.abs(), deltas.abs())
    assert not layer.filter_fn.modulation.deltas.requires_grad


def test_refuses_sequences_longer_than_its_filters():
    with pytest.raises(ValueError, match="max_len=64"):
        _model()(torch.randint(0, 64, (1, 65)))


@pytest.mark.parametrize("chunks", [(37,), (1,) * 12 + (25,), (5, 16, 1, 1, 14)], ids=["prefill", "tokens", "mixed"])
def test_decoding_over_the_history_equals_the_forward(chunks):
    assert_step_matches_forward(_model(3), torch.randint(0, 64, (2, 37)), chunks, atol=2e-5, rtol=1e-4)


def test_padding():
    assert_padding_is_exact(_model(), vocab=64)


def test_trains():
    assert_trains(_model(), vocab=64)
