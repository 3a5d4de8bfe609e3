"""`kernels/wkv6/`: RWKV-6's chunked WKV against its token-by-token recurrence (`naive.py`) at
decays that would overflow a cumulative-decay division, its gradient, its export at other lengths."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

from archc.backends.torch.kernels.wkv6 import naive_wkv6, wkv6


@pytest.mark.parametrize("chunk", [1, 4, 16, 64])
def test_wkv6_matches_thenaive_wkv6(chunk):
    """Decays down to e^−e^4 per token: chunking by cumulative-decay division would overflow."""
    torch.manual_seed(0)
    d = dict(dtype=torch.float64)
    r, k, v = (torch.randn(2, 3, 70, 5, **d) for _ in range(3))
    log_w, u, s0 = -torch.exp(torch.randn(2, 3, 70, 5, **d) * 2), torch.randn(3, 5, **d), torch.randn(2, 3, 5, 5, **d)
    y_ref, s_ref = naive_wkv6(r, k, v, log_w, u, s0)
    y, s = wkv6(r, k, v, log_w, u, s0, chunk=chunk)
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(s, s_ref, atol=1e-10, rtol=1e-10)


def test_wkv6_has_exact_gradients():
    torch.manual_seed(0)
    d = dict(dtype=torch.float64, requires_grad=True)
    args = (torch.randn(1, 2, 11, 3, **d), torch.randn(1, 2, 11, 3, **d), torch.randn(1, 2, 11, 3, **d),
            (-torch.rand(1, 2, 11, 3, dtype=torch.float64) * 2).requires_grad_(), torch.randn(2, 3, **d),
            torch.randn(1, 2, 3, 3, **d))
    assert torch.autograd.gradcheck(lambda *a: wkv6(*a, chunk=4)[0], args)


class _Wkv6(torch.nn.Module):
    def forward(self, x):
        x = x.transpose(1, 2)  # [B, H, T, 16]
        return wkv6(x[..., :4], x[..., 4:8], x[..., 8:12], -x[..., 12:16].exp(), torch.ones(2, 4))[0]


def test_wkv6_exports_with_a_dynamic_length():
    ep = torch.export.export(_Wkv6(), (torch.randn(1, 50, 2, 16),), dynamic_shapes=({1: Dim("T", min=2, max=100_000)},))
    for t in (3, 129):
        x = torch.randn(1, t, 2, 16)
        torch.testing.assert_close(ep.module()(x), _Wkv6()(x))
