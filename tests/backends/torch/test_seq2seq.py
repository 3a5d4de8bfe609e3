"""Encoder–decoder generation (`seq2seq.EncoderDecoder`, `ArchModel.generate` of a two-input
model): greedy decoding against the argmax of the full forward re-run at every length; beam search
with enough beams against exhaustive search over every continuation scored by the forward; a
padded source against the same source alone (the encoder's mask and the cross-attention cache's);
the cross-attention cache computed once."""

from __future__ import annotations

import itertools

import pytest
import torch

import archc
from archc.backends.torch import build
from archc.backends.torch.seq2seq import EncoderDecoder

VOCAB = 5
SPEC = f"""
model t5(src, tgt) {{
  block encoder(x) {{
    x = x + attention(rmsnorm(x), heads=2, pos=relative_bias(buckets=8, max_distance=16))
    return x + mlp(rmsnorm(x), hidden=32, act="relu", bias=false)
  }}
  block decoder(y, memory) {{
    y = y + attention(rmsnorm(y), heads=2, causal=true, pos=relative_bias(buckets=8, max_distance=16))
    y = y + attention(rmsnorm(y), kv=memory, heads=2, name="cross_attn")
    return y + mlp(rmsnorm(y), hidden=32, act="relu", bias=false)
  }}
  memory = embed(src, {VOCAB}, 16)
  memory = rmsnorm(repeat(2, encoder, name="encoder")(memory))
  y = embed(tgt, {VOCAB}, 16)
  y = repeat(2, decoder, name="decoder")(y, memory)
  return lm_head(rmsnorm(y))
}}
"""


@pytest.fixture(scope="module")
def model():
    m = build(archc.loads(SPEC, "t5.arch").graph, seed=0).eval()
    with torch.no_grad():  # off the init, so decoding depends on the source
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return m


def _log_prob(model, src, tgt):
    """Σ log p(tgt[1:] | src, tgt[:-1]) by the full forward."""
    with torch.no_grad():
        logp = model(src, tgt=tgt).logits.log_softmax(-1)
    return logp[:, :-1].gather(-1, tgt[:, 1:, None])[..., 0].sum(-1)


def test_greedy_equals_the_forwards_argmax(model):
    src = torch.randint(0, VOCAB, (3, 7), generator=torch.Generator().manual_seed(1))
    out = model.generate(src, max_new_tokens=6)
    tgt = torch.zeros(3, 1, dtype=torch.long)
    with torch.no_grad():
        for _ in range(6):
            tgt = torch.cat((tgt, model(src, tgt=tgt).logits[:, -1].argmax(-1, keepdim=True)), 1)
    assert torch.equal(out, tgt)
    assert len(set(map(tuple, out.tolist()))) > 1  # the sources decode differently


def test_beam_search_with_every_beam_is_exhaustive_search(model):
    src = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(2))
    n = 3
    out = model.generate(src, max_new_tokens=n, num_beams=VOCAB ** (n - 1), length_penalty=0.0)
    for r in range(2):
        cands = torch.tensor([(0, *c) for c in itertools.product(range(VOCAB), repeat=n)])
        scores = _log_prob(model, src[r:r + 1].expand(len(cands), -1), cands)
        assert out[r].tolist() == cands[scores.argmax()].tolist()


def test_a_padded_source_decodes_as_the_source_alone(model):
    g = torch.Generator().manual_seed(3)
    src = torch.randint(0, VOCAB, (2, 8), generator=g)
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0  # the second source is 5 tokens long
    both = model.generate(src, attention_mask=mask, max_new_tokens=5, num_beams=2)
    alone = model.generate(src[1:, :5], max_new_tokens=5, num_beams=2)
    assert both[1].tolist() == alone[0].tolist()


def test_the_cross_attention_cache_is_computed_once(model, monkeypatch):
    stepper = EncoderDecoder(model)
    assert [nid for nid, _, _ in stepper.cross] == ["decoder.0.cross_attn", "decoder.1.cross_attn"]
    calls = []
    mod = stepper.cross[0][1]
    original = mod.qkv
    monkeypatch.setattr(mod, "qkv", lambda *a, **k: calls.append(1) or original(*a, **k))
    model.generate(torch.randint(0, VOCAB, (1, 6)), max_new_tokens=5)
    assert len(calls) == 1
