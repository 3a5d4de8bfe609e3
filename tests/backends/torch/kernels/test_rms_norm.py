"""The RMSNorm kernels (archc/backends/triton/templates/rms_norm.py.jinja, bound in
archc/backends/torch/kernels/rms_norm/triton.py) against `naive.py`, in Triton's interpreter:
forward and backward, alone and fused with the residual add, Gemma's unit offset, widths that are
not powers of two, lengths 1, 15, 63 and 300; fp32 to rounding, bf16 by flash-linear-attention's
criterion (relative RMS error ≤ 0.005 forward, ≤ 0.008 gradients) against the fp32 reference —
the interpreter rounds fp32 → bf16 by truncation (triton/runtime/interpreter.py `cast_impl`), a
GPU to nearest, so the bf16 error measured here is the larger of the two."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from archc.backends.torch.kernels.rms_norm.naive import naive_rms_norm  # noqa: E402
from archc.backends.torch.kernels.rms_norm.triton import triton_rms_norm  # noqa: E402
from tests.backends.torch.kernels.criteria import rel_rms  # noqa: E402


def _run(fn, dtype, x0, r0, w0, dy, dsum, unit_offset):
    x = x0.to(dtype).requires_grad_()
    r = r0.to(dtype).requires_grad_() if r0 is not None else None
    w = w0.to(dtype).requires_grad_()
    y, s = fn(x, w, 1e-6, unit_offset, r)
    loss = (y.float() * dy).sum() + ((s.float() * dsum).sum() if r is not None else 0.0)
    loss.backward()
    return y.detach(), s.detach(), x.grad, (r.grad if r is not None else None), w.grad


#: every shape in fp32; bf16 up to 63 tokens (the 300-token case costs the interpreter most)
CASES = [(torch.float32, s) for s in ((1, 1, 96), (1, 15, 100), (1, 63, 48), (1, 300, 40))] + [
    (torch.bfloat16, s) for s in ((1, 1, 96), (1, 15, 100), (1, 63, 48))]


@pytest.mark.parametrize(("dtype", "shape"), CASES,
                         ids=lambda c: f"T{c[1]}-d{c[2]}" if isinstance(c, tuple) else str(c).removeprefix("torch."))
@pytest.mark.parametrize("residual", [False, True], ids=["norm", "add+norm"])
def test_kernel_equals_naive(shape, residual, dtype):
    gen = torch.Generator().manual_seed(0)
    unit_offset = shape[2] == 100  # Gemma's (1 + w) on one width
    x0, r0, dy, dsum = (torch.randn(shape, generator=gen) for _ in range(4))
    w0 = torch.randn(shape[2], generator=gen) * 0.1 + (0.0 if unit_offset else 1.0)
    if dtype == torch.bfloat16:  # the inputs as bf16 holds them; the reference in fp32
        x0, r0, w0 = x0.bfloat16(), r0.bfloat16(), w0.bfloat16()
    ref = _run(naive_rms_norm, torch.float32, x0, r0 if residual else None, w0, dy, dsum, unit_offset)
    out = _run(triton_rms_norm, dtype, x0, r0 if residual else None, w0, dy, dsum, unit_offset)
    fwd, grad = (1e-6, 1e-6) if dtype == torch.float32 else (0.005, 0.008)
    for name, a, b, tol in zip(("y", "s", "dx", "dresidual", "dw"), out, ref, (fwd, fwd, grad, grad, grad), strict=True):
        if b is not None:
            assert a.dtype == dtype and a.shape == b.shape, name
            assert rel_rms(a, b) <= tol, (name, rel_rms(a, b))


def test_tracers_see_one_op_not_the_kernel():
    """`torch.export` holds `archc.add_rms_norm` (its fake implementation gives the shapes) and
    Dynamo traces the call without a graph break."""
    import torch._dynamo

    class Norm(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(40))

        def forward(self, x, r):
            return triton_rms_norm(x, self.w, 1e-6, False, r)[0]

    m, x, r = Norm(), torch.randn(2, 5, 40), torch.randn(2, 5, 40)
    ep = torch.export.export(m, (x, r))
    calls = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert "archc.add_rms_norm.default" in calls, calls
    torch.testing.assert_close(ep.module()(x, r), m(x, r))
    assert torch._dynamo.explain(m)(x, r).graph_break_count == 0


def test_naive_equals_pytorch_rms_norm():
    """The reference itself against PyTorch's own `F.rms_norm` (fp32)."""
    x, w = torch.randn(3, 7, 40), torch.randn(40)
    torch.testing.assert_close(naive_rms_norm(x, w, 1e-6)[0], torch.nn.functional.rms_norm(x, (40,), w, 1e-6))
