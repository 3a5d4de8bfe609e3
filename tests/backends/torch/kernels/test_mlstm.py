"""`kernels/mlstm/`: the chunked mLSTM memory against xlstm's own quadratic parallel form at
exponents far outside exp's range; resuming from its state; the step form; its gradient."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from archc.backends.torch.kernels.common import NEG
from archc.backends.torch.kernels.mlstm import mlstm_scan, mlstm_step

xlstm = pytest.importorskip("xlstm")


def _parallel_reference(q, k, v, i, f):
    """xlstm's own parallel mLSTM backend (one stabilized T×T matrix)."""
    from xlstm.blocks.mlstm.backends import parallel_stabilized_simple

    return parallel_stabilized_simple(q, k, v, i[..., None], f[..., None])


@pytest.mark.parametrize("chunk", [1, 7, 64, 200])
def test_mlstm_scan_matches_the_parallel_form_at_huge_gates(chunk):
    """Input-gate pre-activations up to ±150 (e^150 overflows fp32 and nearly fp64) in fp64:
    the stabilizer keeps every exponent ≤ 0, so chunking changes nothing."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 150, 8, dtype=torch.float64) for _ in range(3))
    i, f = torch.randn(2, 3, 150, dtype=torch.float64) * 50, torch.randn(2, 3, 150, dtype=torch.float64) * 3 + 2
    h, _ = mlstm_scan(q, k / math.sqrt(8), v, F.logsigmoid(f), i, chunk=chunk)
    torch.testing.assert_close(h, _parallel_reference(q, k, v, i, f), atol=1e-9, rtol=1e-9)


def test_mlstm_scan_resumes_from_its_state_and_steps_agree():
    torch.manual_seed(0)
    d = dict(dtype=torch.float64)
    q, k, v = (torch.randn(2, 3, 90, 8, **d) for _ in range(3))
    log_f, i = F.logsigmoid(torch.randn(2, 3, 90, **d) + 2), torch.randn(2, 3, 90, **d) * 3
    full, final = mlstm_scan(q, k, v, log_f, i, chunk=16)
    first, state = mlstm_scan(q[:, :, :37], k[:, :, :37], v[:, :, :37], log_f[:, :, :37], i[:, :, :37], chunk=16)
    rest, resumed = mlstm_scan(q[:, :, 37:], k[:, :, 37:], v[:, :, 37:], log_f[:, :, 37:], i[:, :, 37:], state, chunk=16)
    torch.testing.assert_close(torch.cat((first, rest), 2), full, atol=1e-10, rtol=1e-10)
    step_state = (torch.zeros(2, 3, 8, 8, **d), torch.zeros(2, 3, 8, **d), torch.full((2, 3), NEG, **d))
    steps = []
    for t in range(90):
        h, step_state = mlstm_step(q[:, :, t], k[:, :, t], v[:, :, t], log_f[:, :, t], i[:, :, t], step_state)
        steps.append(h)
    torch.testing.assert_close(torch.stack(steps, 2), full, atol=1e-10, rtol=1e-10)
    for a, b, c in zip(final, resumed, step_state, strict=True):
        torch.testing.assert_close(b, a, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(c, a, atol=1e-10, rtol=1e-10)


def test_mlstm_scan_has_exact_gradients():
    torch.manual_seed(0)
    d = dict(dtype=torch.float64, requires_grad=True)
    args = (torch.randn(1, 2, 19, 3, **d), torch.randn(1, 2, 19, 3, **d), torch.randn(1, 2, 19, 3, **d),
            (-torch.rand(1, 2, 19, dtype=torch.float64)).requires_grad_(), torch.randn(1, 2, 19, **d))
    assert torch.autograd.gradcheck(lambda *a: mlstm_scan(*a, chunk=8)[0], args)
