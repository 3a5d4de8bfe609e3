"""`kernels/rwkv7/`: the generalized delta rule's chunked form against its token-by-token
recurrence (`naive.py`) in fp64 at several chunk lengths, with decays that would overflow a
cumulative-decay division and RWKV-7's a = −κ̂, b = κ̂ ⊙ α; the one-token step against the paper's
[V, K] update written out; exact gradients; export at other lengths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.export import Dim

from archc.backends.torch.kernels.rwkv7 import chunk_rwkv7, naive_rwkv7, rwkv7_step


def _inputs(t: int = 70, k: int = 5, v: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    d = dict(dtype=torch.float64, generator=g)
    r, key = torch.randn(2, 3, t, k, **d), torch.randn(2, 3, t, k, **d)
    val = torch.randn(2, 3, t, v, **d)
    log_w = -torch.exp(torch.randn(2, 3, t, k, **d) * 2)  # decays down to e^{−e^4} a token
    kk = F.normalize(torch.randn(2, 3, t, k, **d), dim=-1)
    alpha = torch.rand(2, 3, t, k, **d)
    return r, log_w, key, val, -kk, kk * alpha, torch.randn(2, 3, k, v, **d)


@pytest.mark.parametrize("chunk", [1, 4, 16, 64])
def test_chunk_matches_the_recurrence(chunk):
    *xs, s0 = _inputs()
    o_ref, s_ref = naive_rwkv7(*xs, s0)
    o, s = chunk_rwkv7(*xs, s0, chunk=chunk)
    torch.testing.assert_close(o, o_ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(s, s_ref, atol=1e-10, rtol=1e-10)


def test_the_step_is_rwkv_lms_update_transposed():
    """RWKV-LM's x070 reference: state [V, K] ← state ⊙ w + state (−κ̂)ᵀ(κ̂ ⊙ α) + v kᵀ, out = state r."""
    *xs, s0 = _inputs(t=1)
    r, log_w, k, v, a, b = (x[:, :, 0] for x in xs)
    o, s = rwkv7_step(r, log_w, k, v, a, b, s0)
    vk_state = s0.transpose(-1, -2)  # [V, K]
    want = vk_state * log_w.exp()[..., None, :] + vk_state @ (a[..., :, None] @ b[..., None, :]) \
        + v[..., :, None] @ k[..., None, :]
    torch.testing.assert_close(s, want.transpose(-1, -2))
    torch.testing.assert_close(o, (want @ r[..., None])[..., 0])


def test_chunk_has_exact_gradients():
    xs = tuple(x[:1, :2] for x in _inputs(t=11, k=3, v=3))
    args = tuple(x.clone().requires_grad_() for x in xs)
    assert torch.autograd.gradcheck(lambda *a: chunk_rwkv7(*a, chunk=4)[0], args)


class _Rwkv7(torch.nn.Module):
    def forward(self, x):
        x = x.transpose(1, 2)  # [B, H, T, 24]
        kk = F.normalize(x[..., 16:20], dim=-1)
        return chunk_rwkv7(x[..., :4], -x[..., 4:8].exp(), x[..., 8:12], x[..., 12:16], -kk,
                           kk * torch.sigmoid(x[..., 20:24]))[0]


def test_chunk_exports_with_a_dynamic_length():
    ep = torch.export.export(_Rwkv7(), (torch.randn(1, 50, 2, 24),), dynamic_shapes=({1: Dim("T", min=2, max=100_000)},))
    for t in (3, 129):
        x = torch.randn(1, t, 2, 24)
        torch.testing.assert_close(ep.module()(x), _Rwkv7()(x))
