"""`kernels/lti_scan/`: the blocked form of a dense time-invariant SSM against its token-by-token
recurrence (`naive.py`), from a state and from none, at lengths inside, at and across block
boundaries; its gradient."""

from __future__ import annotations

import pytest
import torch

from archc.backends.torch.kernels.lti_scan import lti_scan, naive_lti_scan


def _system(h: int = 3, n: int = 6):
    torch.manual_seed(0)
    d = dict(dtype=torch.float64)
    return torch.randn(h, n, n, **d) * 0.4, torch.randn(h, n, **d), torch.randn(h, n, **d)


@pytest.mark.parametrize("length", [1, 5, 8, 9, 16, 37])
def test_lti_scan_matches_the_recurrence(length):
    a, b, c = _system()
    u, x0 = torch.randn(2, 3, length, dtype=torch.float64), torch.randn(2, 3, 6, dtype=torch.float64)
    y_ref, x_ref = naive_lti_scan(a, b, c, u, x0)
    y, x = lti_scan(a, b, c, u, x0, block=8)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(x, x_ref, atol=1e-12, rtol=1e-12)
    y0, none = lti_scan(a, b, c, u, None, block=8)  # no state: zeros in, no state out
    assert none is None
    torch.testing.assert_close(y0, naive_lti_scan(a, b, c, u, torch.zeros_like(x0))[0], atol=1e-12, rtol=1e-12)


def test_lti_scan_has_exact_gradients():
    a, b, c = (t.requires_grad_() for t in _system(2, 4))
    u = torch.randn(1, 2, 11, dtype=torch.float64, requires_grad=True)
    x0 = torch.randn(1, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *args: torch.cat([t.flatten() for t in lti_scan(*args, block=4)]),
                                    (a, b, c, u, x0))
