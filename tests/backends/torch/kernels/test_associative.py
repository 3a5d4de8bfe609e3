"""`kernels/associative/`: the segment scan and the token steps against ARMT's update rule token by
token (`naive.py`) in fp64 (padding writes nothing; steps cross segment boundaries); DPFP against
Schlag et al.'s definition; gradients; export with a dynamic length."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.export import Dim

from archc.backends.torch.kernels.associative import (
    associative_scan,
    associative_step,
    dpfp,
    naive_associative,
)


def _inputs(t: int = 23):
    g = torch.Generator().manual_seed(0)
    d = dict(dtype=torch.float64, generator=g)
    q, k = dpfp(torch.randn(2, t, 3, **d), 3), dpfp(torch.randn(2, t, 3, **d), 3)
    keep = torch.ones(2, t, dtype=torch.bool)
    keep[1, 3:7] = False
    return q, k, torch.randn(2, t, 4, **d), torch.rand(2, t, **d), keep


def test_dpfp_is_the_definition():
    x = torch.randn(5, 4, dtype=torch.float64)
    r = torch.cat((F.relu(x), F.relu(-x)), -1)
    want = torch.cat([r * torch.cat((r[:, -j:], r[:, :-j]), -1) for j in (1, 2)], -1)
    torch.testing.assert_close(dpfp(x, 2), want)


def test_scan_matches_the_update_rule():
    q, k, v, beta, keep = _inputs()
    out, _ = associative_scan(q, k, v, beta, 5, 1e-5, keep)
    torch.testing.assert_close(out, naive_associative(q, k, v, beta, 5, 1e-5, keep))


def test_steps_match_the_update_rule_across_segments():
    q, k, v, beta, keep = _inputs()
    f = q.shape[-1]
    state = tuple(torch.zeros(2, *s, dtype=torch.float64) for s in ((f, 4), (f,), (f, 4), (f,)))
    outs = []
    for a, b in ((0, 7), (7, 8), (8, 23)):
        o, state = associative_step(q[:, a:b], k[:, a:b], v[:, a:b], beta[:, a:b], torch.arange(a, b), 5, 1e-5, state,
                                    keep[:, a:b])
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs, 1), naive_associative(q, k, v, beta, 5, 1e-5, keep))


def test_scan_has_the_update_rules_gradients():
    """γ is not differentiated (ARMT's code detaches it), so the reference is the update rule's
    own autograd, not finite differences."""
    q, k, v, beta, keep = _inputs(11)
    grads = []
    for fn in (lambda *a: associative_scan(*a, 4, 1e-5, keep)[0], lambda *a: naive_associative(*a, 4, 1e-5, keep)):
        args = tuple(x.clone().requires_grad_() for x in (q, k, v, beta))
        (fn(*args) * torch.linspace(-1, 1, 4, dtype=torch.float64)).sum().backward()
        grads.append([a.grad for a in args])
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want)


class _Assoc(torch.nn.Module):
    def forward(self, x):
        return associative_scan(dpfp(x[..., :3], 2), dpfp(x[..., 3:6], 2), x[..., 6:], torch.sigmoid(x[..., 0]), 8,
                                1e-5)[0]


def test_scan_exports_with_a_dynamic_length():
    ep = torch.export.export(_Assoc(), (torch.randn(1, 50, 10),), dynamic_shapes=({1: Dim("T", min=2, max=4096)},))
    for t in (3, 70):
        x = torch.randn(1, t, 10)
        torch.testing.assert_close(ep.module()(x), _Assoc()(x))
