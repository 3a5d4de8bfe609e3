"""`kernels/common.py`: the segment sums and the first-order linear scan every chunked kernel
builds on, against the recurrence written step by step here, in both of the scan's forms."""

from __future__ import annotations

import pytest
import torch

from archc.backends.torch.kernels.common import linear_scan, segsum


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


def test_every_kernel_folder_has_its_test_file():
    """Kernel tests mirror `backends/torch/kernels/<op>/`, where a Triton form will sit beside the
    naive, chunked and step forms and be tested against the same `naive.py`."""
    from pathlib import Path

    import archc.backends.torch.kernels as kernels

    here = Path(__file__).parent
    folders = [p.name for p in Path(kernels.__file__).parent.iterdir() if (p / "__init__.py").exists()]
    assert folders and [f for f in folders if not (here / f"test_{f}.py").exists()] == []
