"""RWKV-4 against transformers: the whole model against `RwkvForCausalLM` with weights copied
(forward and greedy decoding through its own state), every form against the others, the init.
The WKV kernel's own tests are in kernels/test_wkv4.py."""

from __future__ import annotations

import pytest
import torch

import archc
from archc.backends.torch import build
from tests.conftest import assert_step_matches_forward, copy_weights

transformers = pytest.importorskip("transformers")

SPEC = """
model ref(tokens) {
  block layer(x) {
    x = x + rwkv_time_mix(layernorm(x), version=4)
    return x + rwkv_channel_mix(layernorm(x), hidden=64)
  }
  x = embed(tokens, 64, 32)
  x = layernorm(x, name="pre_ln")
  x = repeat(2, layer, name="blocks")(x)
  return lm_head(layernorm(x, name="ln_out"))
}
"""


def rwkv_pair():
    cfg = transformers.RwkvConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, attention_hidden_size=32,
                                  intermediate_size=64, context_length=256, rescale_every=0)
    torch.manual_seed(0)
    hf = transformers.RwkvForCausalLM(cfg).eval()
    with torch.no_grad():  # move every parameter off its structured init
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    hf.generation_config.eos_token_id = None
    sd = hf.state_dict()
    m = {"embed.weight": sd["rwkv.embeddings.weight"], "lm_head.weight": sd["head.weight"]}
    for ours, theirs in (("pre_ln", "rwkv.blocks.0.pre_ln"), ("ln_out", "rwkv.ln_out")):
        m[ours + ".weight"], m[ours + ".bias"] = sd[theirs + ".weight"], sd[theirs + ".bias"]
    for k, v in sd.items():
        for i in range(2):
            p = f"rwkv.blocks.{i}."
            if k.startswith(p) and "pre_ln" not in k:
                m[f"blocks.{i}." + k[len(p):].replace("ln1.", "norm.").replace("ln2.", "norm_1.")] = v
    ours = build(archc.loads(SPEC, "ref.arch").graph, seed=0).eval()
    copy_weights(ours, m)
    return hf, ours


@pytest.mark.parametrize("t", [7, 70])
def test_rwkv_matches_transformers(t):
    hf, ours = rwkv_pair()
    ids = torch.randint(0, 64, (2, t))
    torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=1e-5, rtol=1e-5)


def test_rwkv_decoding_matches_transformers():
    hf, ours = rwkv_pair()
    ids = torch.randint(0, 64, (1, 9))
    assert torch.equal(ours.generate(ids, max_new_tokens=8), hf.generate(ids, max_new_tokens=8, do_sample=False))


@pytest.mark.parametrize("chunks", [[45], [1, 1, 43], [9, 1, 28, 1, 6], [1] * 45], ids=lambda c: f"{len(c)}-steps")
def test_every_form_agrees(chunks):
    model = build(archc.loads(SPEC, "ref.arch").graph, seed=0).eval()
    assert_step_matches_forward(model, torch.randint(0, 64, (2, 45)), chunks, atol=1e-5, rtol=1e-5)


def test_init_follows_rwkv4_by_depth():
    model = build("specs/rwkv-tiny.arch")
    first, last = model.get_submodule("blocks.0.attention"), model.get_submodule("blocks.3.attention")
    assert first.time_decay[0].item() == pytest.approx(-5.0) and first.time_decay[-1].item() == pytest.approx(3.0)
    assert torch.equal(first.time_mix_key[0, 0], torch.arange(256) / 256)  # (i/d)^1 at layer 0
    assert (last.time_mix_key > first.time_mix_key).sum() > 200  # pushed towards 1 with depth
