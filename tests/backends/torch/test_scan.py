"""The chunked scans against the recurrences they compute, written step by step here; their
gradients by `gradcheck`; their exported programs at lengths other than the traced one."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

from archc.backends.torch.kernels.common import linear_scan, segsum
from archc.backends.torch.kernels.selective_scan import naive_selective_scan, selective_scan
from archc.backends.torch.kernels.ssd import chunked_decay_attention, naive_decay_attention


def _linear_reference(log_a, u, h0):
    h, out = h0, []
    for i in range(u.shape[1]):
        h = log_a[:, i].exp() * h + u[:, i]
        out.append(h)
    return torch.stack(out, 1)




def test_segsum_is_the_sum_between_two_steps():
    x = torch.randn(7)
    s = segsum(x)
    for i in range(7):
        for j in range(7):
            want = x[j + 1:i + 1].sum() if j <= i else torch.tensor(float("-inf"))
            torch.testing.assert_close(s[i, j], want)


@pytest.fixture(params=["eager", "log-step"])
def scan_form(request, monkeypatch):
    """linear_scan's two forms: a pass over the chunks (eager) and the log-step scan (traced)."""
    if request.param == "log-step":
        from archc.backends.torch.kernels import common
        from archc.backends.torch.kernels.selective_scan import chunk

        monkeypatch.setattr(common, "tracing", lambda: True)
        monkeypatch.setattr(chunk, "tracing", lambda: True)
    return request.param


@pytest.mark.parametrize("n", [1, 2, 5, 16, 17, 300])
@pytest.mark.parametrize("per_element", [False, True], ids=["scalar-decay", "elementwise-decay"])
def test_linear_scan_matches_the_recurrence(n, per_element, scan_form):
    torch.manual_seed(n)
    la = -torch.rand(2, n, 3, 4 if per_element else 1) * 2
    u, h0 = torch.randn(2, n, 3, 4), torch.randn(2, 3, 4)
    torch.testing.assert_close(linear_scan(la, u, h0), _linear_reference(la, u, h0))
    torch.testing.assert_close(linear_scan(la, u), _linear_reference(la, u, torch.zeros(2, 3, 4)))


def test_linear_scan_survives_decays_that_underflow(scan_form):
    """A decay product below fp32's range is exactly 0, never 0/0 (log-space segment sums)."""
    la = torch.full((1, 40, 2), -30.0)
    u = torch.randn(1, 40, 2)
    out = linear_scan(la, u, torch.randn(1, 2))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, 5:], u[:, 5:])


@pytest.mark.parametrize("t", [1, 7, 8, 9, 64, 200])
def test_selective_scan_matches_the_recurrence(t):
    torch.manual_seed(t)
    e, n = 6, 4
    u, dt, A = torch.randn(2, t, e), torch.rand(2, t, e), -torch.rand(e, n) * 3
    B, C, h0 = torch.randn(2, t, n), torch.randn(2, t, n), torch.randn(2, e, n)
    y, h = selective_scan(u, dt, A, B, C, h0, chunk=8)
    y_ref, h_ref = naive_selective_scan(u, dt, A, B, C, h0)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("t", [1, 7, 8, 33, 100])
def test_chunked_decay_attention_matches_the_recurrence(t):
    torch.manual_seed(t)
    q, k, v = torch.randn(2, 3, t, 4), torch.randn(2, 3, t, 4), torch.randn(2, 3, t, 5)
    la, s0 = -torch.rand(2, 3, t), torch.randn(2, 3, 4, 5)
    y, s = chunked_decay_attention(q, k, v, la, s0, chunk=8)
    y_ref, s_ref = naive_decay_attention(q, k, v, la, s0)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s, s_ref, atol=1e-5, rtol=1e-5)


def test_scans_have_exact_gradients():
    """Autograd through the chunked forms (masked −inf segment sums, index_select shifts) against
    finite differences in double precision."""
    torch.manual_seed(0)
    d = dict(dtype=torch.float64, requires_grad=True)
    u, dt = torch.randn(1, 11, 3, **d), torch.rand(1, 11, 3, **d)
    A, B, C = -torch.rand(3, 2, **d), torch.randn(1, 11, 2, **d), torch.randn(1, 11, 2, **d)
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a, chunk=4)[0], (u, dt, A, B, C, torch.randn(1, 3, 2, **d)))
    q, k, v = torch.randn(1, 2, 11, 3, **d), torch.randn(1, 2, 11, 3, **d), torch.randn(1, 2, 11, 2, **d)
    la = (-torch.rand(1, 2, 11, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda *a: chunked_decay_attention(*a, chunk=4)[0], (q, k, v, la))


class _Selective(torch.nn.Module):
    def forward(self, x):
        u, dt, B, C = x[..., :6], x[..., 6:12].sigmoid(), x[..., 12:16], x[..., 16:20]
        return selective_scan(u, dt, -torch.linspace(0.5, 3, 24).view(6, 4), B, C, chunk=8)[0]


class _DecayAttention(torch.nn.Module):
    def forward(self, x):
        x = x.transpose(1, 2)  # [B, H, T, 13]
        return chunked_decay_attention(x[..., :4], x[..., 4:8], x[..., 8:12], -x[..., 12].sigmoid(), chunk=8)[0]


@pytest.mark.parametrize("fn", [_Selective, _DecayAttention], ids=["selective", "decay-attention"])
def test_scans_export_with_a_dynamic_length(fn):
    mod = fn()
    width = 20 if fn is _Selective else 13
    shape = (lambda t: (1, t, width)) if fn is _Selective else (lambda t: (1, t, 2, width))
    ep = torch.export.export(mod, (torch.randn(shape(50)),), dynamic_shapes=({1: Dim("T", min=2, max=100_000)},))
    for t in (3, 129, 700):
        x = torch.randn(shape(t))
        torch.testing.assert_close(ep.module()(x), mod(x))


def test_selective_scan_inference_path_is_the_same():
    """Without autograd the scan updates its state in place and picks its chunk by length."""
    torch.manual_seed(0)
    u, dt, A = torch.randn(2, 300, 6), torch.rand(2, 300, 6), -torch.rand(6, 4) * 3
    B, C, h0 = torch.randn(2, 300, 4), torch.randn(2, 300, 4), torch.randn(2, 6, 4)
    y, h = selective_scan(u, dt, A, B, C, h0, chunk=8)
    with torch.no_grad():
        y2, h2 = selective_scan(u, dt, A, B, C, h0)
    torch.testing.assert_close(y2, y, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h2, h, atol=1e-5, rtol=1e-5)
