"""`kernels/wkv4/`: RWKV-4's chunked WKV against transformers' `rwkv_linear_attention_cpu` (its
reference recurrence) at keys that overflow exp() without the max-stabilizer; its gradient."""

from __future__ import annotations

import pytest
import torch

from archc.backends.torch.kernels.wkv4 import wkv4

transformers = pytest.importorskip("transformers")
from transformers.models.rwkv.modeling_rwkv import rwkv_linear_attention_cpu  # noqa: E402


@pytest.mark.parametrize("t", [1, 5, 32, 33, 100])
@pytest.mark.parametrize("scale", [1.0, 60.0], ids=["plain", "huge-keys"])
def test_wkv_matches_the_reference_recurrence(t, scale):
    """Keys of ±60·N(0,1) overflow exp() unless every exponent is taken relative to a maximum."""
    torch.manual_seed(t)
    a = 6
    w, u = torch.randn(a), torch.randn(a)
    k, v = torch.randn(2, t, a) * scale, torch.randn(2, t, a)
    state = (torch.randn(2, a), torch.rand(2, a) + 0.5, torch.randn(2, a))
    # the reference in fp64; with keys ~60 the maxima are ~100 and one fp32 ulp of such an
    # exponent is ~1e-5 relative after exp() (the reference itself in fp32 is off by 7e-5 there)
    ref, ref_state = rwkv_linear_attention_cpu(w.double(), u.double(), k.double(), v.double(),
                                               state=[s.double() for s in state], return_state=True)
    got, got_state = wkv4(w.exp(), u, k, v, state, chunk=8)
    assert torch.isfinite(got).all()
    tol = 1e-5 if scale == 1.0 else 1e-4
    torch.testing.assert_close(got.double(), ref, atol=tol, rtol=tol)
    # the state is (num, den) scaled by e^−max: compare what it stands for
    for g, r in zip(got_state[:2], ref_state[:2], strict=True):
        torch.testing.assert_close(g.double() * (got_state[2].double() - ref_state[2]).exp(), r, atol=tol, rtol=tol)


def test_wkv_has_exact_gradients():
    torch.manual_seed(0)
    d = dict(dtype=torch.float64, requires_grad=True)
    w, u = (torch.rand(3, dtype=torch.float64) + 0.1).requires_grad_(), torch.randn(3, **d)
    k, v = torch.randn(1, 11, 3, **d), torch.randn(1, 11, 3, **d)
    assert torch.autograd.gradcheck(lambda *x: wkv4(*x, chunk=4)[0], (w, u, k, v))
