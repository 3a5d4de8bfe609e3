"""Gated DeltaNet against references archc did not write: transformers' `Qwen3NextGatedDeltaNet`
(random-initialized from its config, weights copied one to one; its pure-PyTorch chunked and
recurrent gated-delta-rule functions run on the CPU) and the paper's recurrence written token by
token; every form of the kernel against the others; decoding against the forward; padding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import archc
from archc.backends.torch import build
from archc.backends.torch.context import Context
from archc.backends.torch.kernels.gated_delta_rule import (
    chunk_gated_delta_rule,
    gated_delta_rule_step,
    naive_gated_delta_rule,
)
from tests.conftest import assert_step_matches_forward, copy_weights

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


def _inputs(dtype, b=2, h=3, t=150, k=16, v=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(b, h, t, k, generator=g, dtype=dtype), dim=-1) * k ** -0.5
    key = F.normalize(torch.randn(b, h, t, k, generator=g, dtype=dtype), dim=-1)
    val = torch.randn(b, h, t, v, generator=g, dtype=dtype)
    log_alpha = -F.softplus(torch.randn(b, h, t, generator=g, dtype=dtype)) * 0.5
    beta = torch.rand(b, h, t, generator=g, dtype=dtype)
    s0 = torch.randn(b, h, k, v, generator=g, dtype=dtype) * 0.1
    return q, key, val, log_alpha, beta, s0


@pytest.mark.parametrize("chunk", [1, 7, 16, 64])
def test_chunked_wy_form_equals_the_recurrence(chunk):
    """fp64, from a nonzero state, across chunk boundaries and a ragged last chunk."""
    q, k, v, g, beta, s0 = _inputs(torch.float64)
    o, s = chunk_gated_delta_rule(q, k, v, g, beta, s0, chunk=chunk)
    o_ref, s_ref = naive_gated_delta_rule(q, k, v, g, beta, s0)
    torch.testing.assert_close(o, o_ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(s, s_ref, atol=1e-12, rtol=1e-12)


def test_step_and_naive_equal_transformers_recurrent_rule():
    """transformers' token loop (it takes [B, T, H, ·] and scales q itself); fp32 both."""
    q, k, v, g, beta, s0 = _inputs(torch.float32, t=40)
    o_hf, s_hf = qwen3_next.torch_recurrent_gated_delta_rule(
        q.transpose(1, 2) * 16 ** 0.5, k.transpose(1, 2), v.transpose(1, 2), g.transpose(1, 2), beta.transpose(1, 2),
        initial_state=s0, output_final_state=True)
    o_ref, s_ref = naive_gated_delta_rule(q, k, v, g, beta, s0)
    torch.testing.assert_close(o_ref, o_hf.transpose(1, 2), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(s_ref, s_hf, atol=1e-6, rtol=1e-5)
    s, outs = s0, []
    for t in range(40):
        o_t, s = gated_delta_rule_step(q[:, :, t], k[:, :, t], v[:, :, t], g[:, :, t], beta[:, :, t], s)
        outs.append(o_t)
    torch.testing.assert_close(torch.stack(outs, 2), o_ref, atol=1e-6, rtol=1e-5)


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
    """A left- and a right-padded sequence in one batch give each sequence's own outputs."""
    model = _model()
    ids = torch.randint(0, 64, (2, 20))
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[0, :6] = False   # left padding
    mask[1, 15:] = False  # right padding
    with torch.no_grad():
        out = model(ids, attention_mask=mask).logits
        alone0 = model(ids[:1, 6:]).logits
        alone1 = model(ids[1:, :15]).logits
    torch.testing.assert_close(out[0, 6:], alone0[0], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(out[1, :15], alone1[0], atol=2e-5, rtol=1e-4)


def test_trains():
    model = _model().train()
    ids = torch.randint(0, 64, (4, 33))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        loss = model(ids, labels=ids).loss
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
