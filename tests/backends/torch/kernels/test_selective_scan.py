"""`kernels/selective_scan/`: Mamba's chunked selective scan against its naive recurrence
(`naive.py`, the paper's equations token by token), its gradient by `gradcheck`, its exported
program at lengths other than the traced one, and its no-grad path."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

from archc.backends.torch.kernels.selective_scan import naive_selective_scan, selective_scan


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


def test_selective_scan_has_exact_gradients():
    """Autograd through the chunked form (masked −inf segment sums, index_select shifts) against
    finite differences in double precision."""
    torch.manual_seed(0)
    d = dict(dtype=torch.float64, requires_grad=True)
    u, dt = torch.randn(1, 11, 3, **d), torch.rand(1, 11, 3, **d)
    A, B, C = -torch.rand(3, 2, **d), torch.randn(1, 11, 2, **d), torch.randn(1, 11, 2, **d)
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a, chunk=4)[0], (u, dt, A, B, C, torch.randn(1, 3, 2, **d)))


class _Selective(torch.nn.Module):
    def forward(self, x):
        u, dt, B, C = x[..., :6], x[..., 6:12].sigmoid(), x[..., 12:16], x[..., 16:20]
        return selective_scan(u, dt, -torch.linspace(0.5, 3, 24).view(6, 4), B, C, chunk=8)[0]


def test_selective_scan_exports_with_a_dynamic_length():
    mod = _Selective()
    ep = torch.export.export(mod, (torch.randn(1, 50, 20),), dynamic_shapes=({1: Dim("T", min=2, max=100_000)},))
    for t in (3, 129, 700):
        x = torch.randn(1, t, 20)
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
