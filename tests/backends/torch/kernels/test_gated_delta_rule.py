"""`kernels/gated_delta_rule/`: the chunked WY form against the paper's recurrence token by token
(`naive.py`, fp64), and the recurrence and the step form against transformers' own
`torch_recurrent_gated_delta_rule` (Qwen3-Next)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from archc.backends.torch.kernels.gated_delta_rule import (
    chunk_gated_delta_rule,
    gated_delta_rule_step,
    naive_gated_delta_rule,
)

qwen3_next = pytest.importorskip("transformers.models.qwen3_next.modeling_qwen3_next")


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
