"""`kernels/ssd/`: the chunked decay attention (Mamba-2's SSD, RetNet's retention) against its
naive recurrence, its gradient by `gradcheck`, its exported program at other lengths."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

from archc.backends.torch.kernels.ssd import chunked_decay_attention, naive_decay_attention


@pytest.mark.parametrize("t", [1, 7, 8, 33, 100])
def test_chunked_decay_attention_matches_the_recurrence(t):
    torch.manual_seed(t)
    q, k, v = torch.randn(2, 3, t, 4), torch.randn(2, 3, t, 4), torch.randn(2, 3, t, 5)
    la, s0 = -torch.rand(2, 3, t), torch.randn(2, 3, 4, 5)
    y, s = chunked_decay_attention(q, k, v, la, s0, chunk=8)
    y_ref, s_ref = naive_decay_attention(q, k, v, la, s0)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s, s_ref, atol=1e-5, rtol=1e-5)


def test_chunked_decay_attention_has_exact_gradients():
    torch.manual_seed(0)
    d = dict(dtype=torch.float64, requires_grad=True)
    q, k, v = torch.randn(1, 2, 11, 3, **d), torch.randn(1, 2, 11, 3, **d), torch.randn(1, 2, 11, 2, **d)
    la = (-torch.rand(1, 2, 11, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda *a: chunked_decay_attention(*a, chunk=4)[0], (q, k, v, la))


class _DecayAttention(torch.nn.Module):
    def forward(self, x):
        x = x.transpose(1, 2)  # [B, H, T, 13]
        return chunked_decay_attention(x[..., :4], x[..., 4:8], x[..., 8:12], -x[..., 12].sigmoid(), chunk=8)[0]


def test_chunked_decay_attention_exports_with_a_dynamic_length():
    mod = _DecayAttention()
    ep = torch.export.export(mod, (torch.randn(1, 50, 2, 13),), dynamic_shapes=({1: Dim("T", min=2, max=100_000)},))
    for t in (3, 129, 700):
        x = torch.randn(1, t, 2, 13)
        torch.testing.assert_close(ep.module()(x), mod(x))
