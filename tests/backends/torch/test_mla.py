"""MLA's layer against transformers' DeepseekV3Attention (random-initialized from its config,
weights copied): with and without the query rank, interleaved and rotate_half RoPE, biases;
decoding over the compressed cache (the absorbed form) against the forward; padding; training."""

from __future__ import annotations

import pytest
import torch

import archc
from archc.backends.torch import build
from tests.conftest import assert_padding_is_exact, assert_step_matches_forward, assert_trains

transformers = pytest.importorskip("transformers")


def _spec(q_rank: int | None, interleave: bool, bias: bool) -> str:
    q = "" if q_rank is None else f", q_lora_rank={q_rank}"
    return f"""
model m(tokens) {{
  x = embed(tokens, 64, 32)
  x = x + mla(rmsnorm(x), heads=2, kv_lora_rank=16{q}, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6,
              rope_theta=500, rope_interleave={str(interleave).lower()}, bias={str(bias).lower()})
  return lm_head(rmsnorm(x))
}}
"""


def _model(q_rank: int | None = 12, interleave: bool = True, bias: bool = False):
    model = build(archc.loads(_spec(q_rank, interleave, bias), "m.arch").graph, seed=0).eval()
    with torch.no_grad():  # off the constant inits (unit norms, zero biases), so a swapped tensor shows
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    return model


@pytest.mark.parametrize(("q_rank", "interleave", "bias"), [(12, True, False), (None, True, False), (12, False, True)],
                         ids=["q-rank", "q-proj", "rotate-half+bias"])
def test_layer_equals_deepseek_v3_attention(q_rank, interleave, bias):
    from transformers.models.deepseek_v3 import modeling_deepseek_v3 as ds

    config = transformers.DeepseekV3Config(
        hidden_size=32, num_attention_heads=2, num_key_value_heads=2, q_lora_rank=q_rank, kv_lora_rank=16,
        qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6, rope_interleave=interleave, attention_bias=bias,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0}, rms_norm_eps=1e-6)
    config._attn_implementation = "eager"
    ref = ds.DeepseekV3Attention(config, layer_idx=0).eval()
    layer = next(m for _, m in _model(q_rank, interleave, bias).op_modules() if m.op == "mla")
    missing = ref.load_state_dict(layer.state_dict(), strict=True)
    assert not missing.missing_keys
    t = 13
    x = torch.randn(2, t, 32)
    positions = torch.arange(t)
    cos, sin = ds.DeepseekV3RotaryEmbedding(config)(x, positions[None])
    mask = torch.full((t, t), float("-inf")).triu(1)[None, None]
    from archc.backends.torch.context import Context

    with torch.no_grad():
        want, _ = ref(x, position_embeddings=(cos, sin), attention_mask=mask)
        torch.testing.assert_close(layer(x, Context(positions)), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunks", [(37,), (1,) * 12 + (25,), (5, 16, 1, 1, 14)], ids=["prefill", "tokens", "mixed"])
def test_decoding_over_the_compressed_cache_equals_the_forward(chunks):
    assert_step_matches_forward(_model(), torch.randint(0, 64, (2, 37)), chunks, atol=2e-5, rtol=1e-4)


def test_padding():
    assert_padding_is_exact(_model(), vocab=64)


def test_trains():
    assert_trains(_model(), vocab=64)
