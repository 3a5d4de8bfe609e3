"""Mamba and Mamba-2 against transformers' MambaForCausalLM / Mamba2ForCausalLM (their PyTorch
paths, random-initialized from config objects, weights copied across), and every form of each
mixer (chunked forward, multi-token step, one-token step) against the others."""

from __future__ import annotations

import pytest
import torch

import archc
from archc.backends.torch import build
from tests.conftest import assert_step_matches_forward, copy_weights

transformers = pytest.importorskip("transformers")

MAMBA_SPEC = """
model ref(tokens) {{
  block layer(x) {{
    return x + mamba(rmsnorm(x, eps=1e-5), d_state=8, expand=2, d_conv=4{extra})
  }}
  x = embed(tokens, 64, 32)
  x = repeat(2, layer)(x)
  return lm_head(rmsnorm(x, eps=1e-5), tied=true)
}}
"""

MAMBA2_SPEC = """
model ref(tokens) {
  block layer(x) {
    return x + mamba2(rmsnorm(x, eps=1e-5), d_state=8, expand=2, d_conv=4, head_dim=16, groups=2, chunk=8)
  }
  x = embed(tokens, 64, 32)
  x = repeat(2, layer)(x)
  return lm_head(rmsnorm(x, eps=1e-5))
}
"""


def _build(text: str):
    return build(archc.loads(text, "ref.arch").graph, seed=0).eval()


def _backbone_map(sd: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """transformers' `backbone.*` names to archc's (the mixer keeps mamba_ssm's names)."""
    m = {"embed.weight": sd["backbone.embeddings.weight"], "norm.weight": sd["backbone.norm_f.weight"]}
    for k, v in sd.items():
        for i in range(layers):
            p = f"backbone.layers.{i}."
            if k.startswith(p):
                m[f"layers.{i}." + k[len(p):]] = v
    return m


def _randomize(hf) -> None:
    """Move the 1-D parameters (D, dt biases, norm scales) off their constant inits so that a
    swapped or ignored one shows."""
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if p.dim() == 1 or "A_log" in name:
                p.add_(torch.randn_like(p) * 0.2)


def mamba_pair(bias: bool = False, dt_rank: int = 2):
    cfg = transformers.MambaConfig(vocab_size=64, hidden_size=32, state_size=8, expand=2, conv_kernel=4,
                                   num_hidden_layers=2, time_step_rank=dt_rank, use_bias=bias,
                                   layer_norm_epsilon=1e-5, tie_word_embeddings=True)
    torch.manual_seed(0)
    hf = transformers.MambaForCausalLM(cfg).eval()
    _randomize(hf)
    hf.generation_config.eos_token_id = None  # generate exactly max_new_tokens, as ours does
    extra = f", dt_rank={dt_rank}" + (", bias=true" if bias else "")
    ours = _build(MAMBA_SPEC.format(extra=extra))
    copy_weights(ours, _backbone_map(hf.state_dict(), 2))
    return hf, ours


@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("t", [5, 100])
def test_mamba_matches_transformers(bias, t):
    hf, ours = mamba_pair(bias)
    ids = torch.randint(0, 64, (2, t))
    torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=1e-5, rtol=1e-5)


def test_mamba_padding_matches_transformers():
    """Right padding: the real tokens' logits equal the unpadded run (transformers zeroes the padded
    states the same way)."""
    hf, ours = mamba_pair()
    ids = torch.randint(0, 64, (2, 20))
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[1, 13:] = 0
    got = ours(ids, attention_mask=mask).logits
    torch.testing.assert_close(got, hf(ids, attention_mask=mask).logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1, :13], ours(ids[1:, :13]).logits[0], atol=1e-5, rtol=1e-5)


def test_mamba_cache_matches_transformers():
    """Prefill then one-token steps, with transformers' own cache and generation path."""
    hf, ours = mamba_pair()
    ids = torch.randint(0, 64, (1, 12))
    ref = hf.generate(ids, max_new_tokens=6, do_sample=False)
    got = ours.generate(ids, max_new_tokens=6)
    assert torch.equal(got, ref)


def mamba2_pair():
    cfg = transformers.Mamba2Config(vocab_size=64, hidden_size=32, state_size=8, expand=2, conv_kernel=4,
                                    num_hidden_layers=2, head_dim=16, num_heads=4, n_groups=2, chunk_size=8,
                                    layer_norm_epsilon=1e-5, tie_word_embeddings=False)
    torch.manual_seed(1)
    hf = transformers.Mamba2ForCausalLM(cfg).eval()
    _randomize(hf)
    hf.generation_config.eos_token_id = None
    ours = _build(MAMBA2_SPEC)
    m = _backbone_map(hf.state_dict(), 2)
    m["lm_head.weight"] = hf.state_dict()["lm_head.weight"]
    copy_weights(ours, m)
    return hf, ours


@pytest.mark.parametrize("t", [5, 8, 37])
def test_mamba2_matches_transformers(t):
    hf, ours = mamba2_pair()
    ids = torch.randint(0, 64, (2, t))
    torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=1e-5, rtol=1e-5)


def test_mamba2_cache_matches_transformers():
    hf, ours = mamba2_pair()
    ids = torch.randint(0, 64, (1, 11))
    assert torch.equal(ours.generate(ids, max_new_tokens=6), hf.generate(ids, max_new_tokens=6, do_sample=False))


@pytest.mark.parametrize("spec", [MAMBA_SPEC.format(extra=""), MAMBA2_SPEC], ids=["mamba", "mamba2"])
@pytest.mark.parametrize("chunks", [[37], [1, 1, 1, 34], [9, 1, 20, 1, 6], [1] * 37], ids=lambda c: f"{len(c)}-steps")
def test_every_form_agrees(spec, chunks):
    """Chunked forward = multi-token steps (prefill from a state) = one-token recurrence."""
    model = _build(spec)
    assert_step_matches_forward(model, torch.randint(0, 64, (2, 37)), chunks, atol=1e-5, rtol=1e-5)


def test_state_has_the_summary_shapes_and_does_not_grow():
    model = build("specs/mamba-tiny.arch", device="meta")
    short, long = model.init_state(2, 16, device="meta"), model.init_state(2, 100_000, device="meta")
    assert [tuple(s.shape) for s in short] == [(2, 512, 4), (2, 512, 16)] * 4
    assert [s.shape for s in short] == [s.shape for s in long]
    assert sum(s.numel() * 4 for s in short) == 2 * archc.summary("specs/mamba-tiny.arch").total.state_bytes


@pytest.mark.parametrize("spec", [MAMBA_SPEC.format(extra=""), MAMBA2_SPEC])
def test_projections_take_pytorchs_default_init_as_mamba_ssm(spec):
    """mamba_ssm leaves in_proj / x_proj at nn.Linear's default: the reference is a fresh nn.Linear of
    the same shape (its std, U(±1/√fan_in)), not N(0, 0.02)."""
    model = _build(spec)
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        proj = name.rsplit(".", 2)[-2] if name.endswith("proj.weight") else None
        if proj in ("in_proj", "x_proj"):  # out_proj keeps its role's residual init (tests/backends/torch/test_records.py)
            want = float(torch.nn.Linear(p.shape[1], p.shape[0]).weight.std())
            assert float(p.std()) == pytest.approx(want, rel=0.1), name
            assert float(p.abs().max()) <= p.shape[1] ** -0.5
