"""Gated DeltaNet against references archc did not write: transformers' `Qwen3NextGatedDeltaNet`
(random-initialized from its config, weights copied one to one); decoding against the forward;
padding. The kernel's forms against the paper's recurrence and transformers' own
gated-delta-rule functions are in kernels/test_gated_delta_rule.py."""

from __future__ import annotations

import pytest
import torch

import archc
from archc.backends.torch import build
from archc.backends.torch.context import Context
from tests.conftest import assert_padding_is_exact, assert_step_matches_forward, assert_trains, copy_weights

qwen3_next = pytest.importorskip("transformers.models.qwen3_next.modeling_qwen3_next")

SPEC = """
model gdn(tokens) {{
  x = embed(tokens, 64, 32)
  x = x + gated_deltanet(rmsnorm(x), heads=2, head_dim=8, v_heads={v_heads}, v_head_dim={v_dim}, chunk={chunk})
  return lm_head(rmsnorm(x))
}}
"""


def _model(v_heads: int = 4, v_dim: int = 12, chunk: int = 16):
    return build(archc.loads(SPEC.format(v_heads=v_heads, v_dim=v_dim, chunk=chunk), "gdn.arch").graph,
                 seed=0).eval()


def _reference_layer(v_heads: int, v_dim: int, seed: int = 0):
    cfg = qwen3_next.Qwen3NextConfig(
        hidden_size=32, linear_num_key_heads=2, linear_num_value_heads=v_heads, linear_key_head_dim=8,
        linear_value_head_dim=v_dim, linear_conv_kernel_dim=4, rms_norm_eps=1e-6, num_hidden_layers=1,
        layer_types=["linear_attention"], hidden_act="silu")
    torch.manual_seed(seed)
    ref = qwen3_next.Qwen3NextGatedDeltaNet(cfg, layer_idx=0).eval()
    with torch.no_grad():  # off the constant inits, so that a swapped or ignored tensor shows
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return ref


@pytest.mark.parametrize(("v_heads", "v_dim"), [(2, 8), (4, 12)], ids=["mha", "grouped-values"])
@pytest.mark.parametrize("t", [5, 64, 150], ids=lambda t: f"T{t}")
def test_layer_equals_qwen3_next_gated_deltanet(v_heads, v_dim, t):
    """Below, at and across transformers' 64-token chunk, with key heads serving several value
    heads. transformers computes the rule in fp32 whatever the input dtype, so both run in fp32
    and differ by the order of summation only (≈1e-6 relative)."""
    ours = _model(v_heads, v_dim).get_submodule("mixer")
    ref = _reference_layer(v_heads, v_dim)
    copy_weights(ours, dict(ref.named_parameters()))  # the same names and layouts
    x = torch.randn(2, t, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, ctx=Context(torch.arange(t))), ref(x), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("chunks", [(37,), (1,) * 12 + (25,), (5, 16, 1, 1, 14)], ids=["prefill", "tokens", "mixed"])
def test_decoding_equals_the_forward(chunks):
    assert_step_matches_forward(_model(), torch.randint(0, 64, (2, 37)), chunks, atol=2e-5, rtol=1e-4)


def test_padding_neither_writes_nor_decays_the_memory():
    assert_padding_is_exact(_model(), vocab=64)


def test_trains():
    assert_trains(_model(), vocab=64)
