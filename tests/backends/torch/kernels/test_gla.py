"""`kernels/gla/`: gated linear attention's chunked form against its token-by-token recurrence
(`naive.py`, the paper's eq. 2 with its gate) in fp64 at several chunk lengths, with decays that
would overflow a cumulative-decay division; the one-token step; exact gradients; export at other
lengths."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

from archc.backends.torch.kernels.gla import chunk_gla, gla_step, naive_gla


def _inputs(t: int = 70, k: int = 5, v: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    d = dict(dtype=torch.float64, generator=g)
    q, key = torch.randn(2, 3, t, k, **d), torch.randn(2, 3, t, k, **d)
    val = torch.randn(2, 3, t, v, **d)
    log_a = -torch.exp(torch.randn(2, 3, t, k, **d) * 2)  # decays down to e^{−e^4} a token
    return q, key, val, log_a, torch.randn(2, 3, k, v, **d)


@pytest.mark.parametrize("chunk", [1, 4, 16, 64])
def test_chunk_matches_the_recurrence(chunk):
    q, k, v, log_a, s0 = _inputs()
    o_ref, s_ref = naive_gla(q, k, v, log_a, s0)
    o, s = chunk_gla(q, k, v, log_a, s0, chunk=chunk)
    torch.testing.assert_close(o, o_ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(s, s_ref, atol=1e-10, rtol=1e-10)


def test_the_step_reads_the_memory_after_its_own_write():
    """o_t = q_t S_t: the token's own key and value count with weight 1 (RWKV-6 reads S_{t−1})."""
    q, k, v, log_a, s0 = _inputs(t=1)
    o, s = gla_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], log_a[:, :, 0], s0)
    want_s = log_a[:, :, 0].exp()[..., None] * s0 + k[:, :, 0, :, None] * v[:, :, 0, None, :]
    torch.testing.assert_close(s, want_s)
    torch.testing.assert_close(o, torch.einsum("bhk,bhkv->bhv", q[:, :, 0], want_s))


def test_chunk_has_exact_gradients():
    q, k, v, log_a, s0 = (x[:1, :2] for x in _inputs(t=11, k=3, v=3))
    args = tuple(x.clone().requires_grad_() for x in (q, k, v, log_a / 4, s0))
    assert torch.autograd.gradcheck(lambda *a: chunk_gla(*a, chunk=4)[0], args)


class _Gla(torch.nn.Module):
    def forward(self, x):
        x = x.transpose(1, 2)  # [B, H, T, 16]
        return chunk_gla(x[..., :4], x[..., 4:8], x[..., 8:12], -x[..., 12:16].exp())[0]


def test_chunk_exports_with_a_dynamic_length():
    ep = torch.export.export(_Gla(), (torch.randn(1, 50, 2, 16),), dynamic_shapes=({1: Dim("T", min=2, max=100_000)},))
    for t in (3, 129):
        x = torch.randn(1, t, 2, 16)
        torch.testing.assert_close(ep.module()(x), _Gla()(x))
