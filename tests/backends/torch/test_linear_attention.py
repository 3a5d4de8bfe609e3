"""Linear attention and Performer FAVOR+ against their papers' equations and exact softmax
attention; parallel (chunked), bidirectional and recurrent forms agree."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import archc
from archc.backends.torch import build
from archc.backends.torch.context import Context
from archc.backends.torch.init import Init
from archc.backends.torch.ops.linear_attention import causal_linear_attention, orthogonal_gaussian
from tests.conftest import assert_step_matches_forward

LM = """
model t(tokens) {{
  block decoder(x) {{
    x = x + {mixer}
    return x + mlp(layernorm(x), hidden=64)
  }}
  x = embed(tokens, 50, 32)
  x = repeat(2, decoder)(x)
  return lm_head(layernorm(x))
}}
"""

MIXERS = {
    "elu": 'linear_attention(layernorm(x), heads=4, feature_map="elu", causal={c})',
    "relu": 'linear_attention(layernorm(x), heads=2, feature_map="relu", causal={c})',
    "performer": "performer_attention(layernorm(x), heads=4, features=24, causal={c})",
}


def _model(mixer: str, causal: bool = True):
    text = LM.format(mixer=MIXERS[mixer].format(c=str(causal).lower()))
    return build(archc.loads(text, "t.arch").graph, seed=2).eval()


def _layer(model):
    return model.get_submodule("layers.0.attn")


def _reference(layer, x, causal, mask=None):
    """The paper's equation as one masked T×T product: y_i = Σ_j a_ij v_j / Σ_j a_ij with
    a_ij = φ(q_i)·φ(k_j) over j ≤ i (causal) or all j, padded keys excluded."""
    q, k, v = layer.qkv(x, x, None)
    a = layer.features(q.float(), True) @ layer.features(k.float(), False).transpose(-1, -2)
    t = x.shape[1]
    if causal:
        a = a * torch.ones(t, t).tril()
    if mask is not None:
        a = a * mask[:, None, None, :]
    y = (a @ v.float()) / a.sum(-1, keepdim=True).clamp_min(1e-6)
    return layer.out(y)


@pytest.mark.parametrize("mixer", list(MIXERS))
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("t", [1, 5, 64, 150])
def test_forward_equals_the_papers_equation(mixer, causal, t):
    layer = _layer(_model(mixer, causal))
    x = torch.randn(2, t, 32)
    ctx = Context(torch.arange(t))
    torch.testing.assert_close(layer(x, ctx=ctx), _reference(layer, x, causal), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mixer", list(MIXERS))
def test_padded_keys_are_excluded(mixer):
    layer = _layer(_model(mixer, causal=False))
    x = torch.randn(2, 9, 32)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    got = layer(x, ctx=Context(torch.arange(9), mask))
    torch.testing.assert_close(got, _reference(layer, x, False, mask.float()), atol=1e-5, rtol=1e-4)
    # the unpadded row computed alone gives the same outputs at its real positions
    alone = layer(x[1:, :6], ctx=Context(torch.arange(6)))
    torch.testing.assert_close(got[1:, :6], alone, atol=1e-5, rtol=1e-4)


def test_chunked_form_with_initial_state_equals_recurrence():
    torch.manual_seed(0)
    fq, fk = torch.rand(2, 3, 37, 5), torch.rand(2, 3, 37, 5)
    v, s0 = torch.randn(2, 3, 37, 4), torch.randn(2, 3, 5, 4)
    out, final = causal_linear_attention(fq, fk, v, s0, chunk=8)
    s, ref = s0.clone(), []
    for i in range(37):  # S_i = S_{i-1} + φ(k_i)ᵀ v_i ; y_i = φ(q_i) S_i
        s = s + fk[:, :, i, :, None] * v[:, :, i, None, :]
        ref.append(fq[:, :, i, None, :] @ s)
    torch.testing.assert_close(out, torch.cat(ref, 2), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(final, s, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("mixer", list(MIXERS))
@pytest.mark.parametrize("chunks", [(1,) * 20, (7, 1, 12), (20,)])
def test_step_equals_forward(mixer, chunks):
    model = _model(mixer)
    ids = torch.randint(0, 50, (2, sum(chunks)))
    assert_step_matches_forward(model, ids, chunks, atol=2e-5, rtol=1e-4)


def test_spec_models_decode_like_forward():
    for spec in ("specs/linear-transformer-tiny.arch", "specs/performer-tiny.arch"):
        model = build(spec, seed=0).eval()
        ids = torch.randint(0, 4096, (1, 70))
        assert_step_matches_forward(model, ids, (65, 1, 4), atol=1e-4, rtol=1e-4)


def test_orthogonal_features_are_orthogonal_within_blocks():
    w = orthogonal_gaussian(20, 8, Init(0))
    block = w[:8] / w[:8].norm(dim=1, keepdim=True)
    torch.testing.assert_close(block @ block.T, torch.eye(8), atol=1e-5, rtol=0)
    assert w.shape == (20, 8)


def test_performer_error_falls_as_features_grow():
    """FAVOR+ approximates softmax attention (Performer Lemma 1): the error against exact
    attention (torch's SDPA) falls as m grows, averaged over seeds."""
    torch.manual_seed(0)
    b, h, t, hd = 2, 2, 48, 16
    q, k, v = torch.randn(b, h, t, hd) * 0.5, torch.randn(b, h, t, hd) * 0.5, torch.randn(b, h, t, hd)
    exact = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    errors = []
    for m in (8, 32, 128, 512):
        err = 0.0
        for seed in range(4):
            text = LM.format(mixer=f"performer_attention(layernorm(x), heads={h}, head_dim={hd}, features={m})")
            layer = _layer(build(archc.loads(text, "t.arch").graph, seed=seed))
            fq, fk = layer.features(q, True), layer.features(k, False)
            num, _ = causal_linear_attention(fq, fk, F.pad(v, (0, 1), value=1.0))
            approx = num[..., :-1] / num[..., -1:]
            err += ((approx - exact).norm() / exact.norm()).item() / 4
        errors.append(err)
    assert all(a > b for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] < 0.5 * errors[0], errors
