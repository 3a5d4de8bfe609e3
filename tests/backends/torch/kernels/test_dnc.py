"""`kernels/dnc/`: the vectorized step (retention and usage, allocation by sorted usage, content
and allocation write weighting, erase/write, the temporal link matrix and precedence, backward /
content / forward reads) against the paper's equations written out location by location
(`naive.py`) in fp64; allocation against its definition; finite gradients through the sort."""

from __future__ import annotations

import torch

from archc.backends.torch.kernels.dnc import DNCInterface, dnc_scan, dnc_step, naive_dnc
from archc.backends.torch.kernels.dnc.step import allocation

B, N, W, R = 2, 6, 4, 2
WIDTH = W * (R + 3) + 5 * R + 3  # the interface vector


def _state():
    return tuple(torch.zeros(B, *s, dtype=torch.float64) for s in ((N, W), (N,), (N,), (N, N), (R, N), (N,)))


def test_step_matches_the_equations():
    g = torch.Generator().manual_seed(0)
    interfaces = [DNCInterface.parse(torch.randn(B, WIDTH, dtype=torch.float64, generator=g), W, R) for _ in range(6)]
    want, final = naive_dnc(_state(), interfaces)
    state, outs = _state(), []
    for it in interfaces:
        out, state = dnc_step(*state, it)
        outs.append(out)
    torch.testing.assert_close(torch.stack(outs, 1), want)
    for got, ref in zip(state, final, strict=True):
        torch.testing.assert_close(got, ref)


def test_allocation_favours_the_least_used_location():
    usage = torch.tensor([[0.9, 0.1, 0.5, 1.0]], dtype=torch.float64)
    a = allocation(usage)
    u = 1e-6 + (1 - 1e-6) * usage[0]
    want = [(1 - u[1]), (1 - u[2]) * u[1], (1 - u[0]) * u[1] * u[2], (1 - u[3]) * u[1] * u[2] * u[0]]
    torch.testing.assert_close(a[0, [1, 2, 0, 3]], torch.stack(want))


def test_scan_has_finite_gradients():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, 5, WIDTH, dtype=torch.float64, generator=g, requires_grad=True)

    def cell(x_t, carry):
        out, new = dnc_step(*carry, DNCInterface.parse(x_t, W, R))
        return out.flatten(1), new

    reads, _ = dnc_scan(cell, x, torch.ones(B, 5, dtype=torch.bool), _state(), R * W)
    reads.sum().backward()
    assert torch.isfinite(x.grad).all()
