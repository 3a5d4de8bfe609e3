"""The LayerNorm kernels (archc/backends/triton/templates/layer_norm.py.jinja, bound in
archc/backends/torch/kernels/layer_norm/triton.py) against PyTorch's `F.layer_norm` (`naive.py`),
in Triton's interpreter: forward and backward, alone and fused with the residual add, with and
without the affine scale and shift, widths that are not powers of two, lengths 1, 15, 63 and 300;
fp32 to rounding, bf16 by flash-linear-attention's criterion against the fp32 reference (see
test_rms_norm.py for why the reference is fp32)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from archc.backends.torch.kernels.layer_norm.naive import naive_layer_norm  # noqa: E402
from archc.backends.torch.kernels.layer_norm.triton import triton_layer_norm  # noqa: E402
from tests.backends.torch.kernels.criteria import rel_rms  # noqa: E402


def _run(fn, dtype, x0, r0, w0, b0, dy, dsum):
    x = x0.to(dtype).requires_grad_()
    r = r0.to(dtype).requires_grad_() if r0 is not None else None
    w = w0.to(dtype).requires_grad_() if w0 is not None else None
    b = b0.to(dtype).requires_grad_() if b0 is not None else None
    y, s = fn(x, w, b, 1e-5, r)
    loss = (y.float() * dy).sum() + ((s.float() * dsum).sum() if r is not None else 0.0)
    loss.backward()
    return (y.detach(), s.detach(), x.grad, r.grad if r is not None else None, w.grad if w is not None else None,
            b.grad if b is not None else None)


#: every length with scale and shift, the other affine variants at one length; bf16 up to 63
#: tokens (the 300-token case costs the interpreter most; fp32 covers it)
SHAPES = ((1, 1, 96), (1, 15, 100), (1, 63, 48), (1, 300, 40))
CASES = [(dtype, shape, "weight+bias") for dtype in (torch.float32, torch.bfloat16) for shape in SHAPES
         if dtype == torch.float32 or shape[1] != 300] + [
    (dtype, (1, 15, 100), affine) for dtype in (torch.float32, torch.bfloat16) for affine in ("weight", "none")]


@pytest.mark.parametrize(("dtype", "shape", "affine"), CASES, ids=lambda c: (
    f"T{c[1]}-d{c[2]}" if isinstance(c, tuple) else str(c).removeprefix("torch.") if isinstance(c, torch.dtype) else c))
@pytest.mark.parametrize("residual", [False, True], ids=["norm", "add+norm"])
def test_kernel_equals_f_layer_norm(shape, affine, residual, dtype):
    gen = torch.Generator().manual_seed(0)
    x0, r0, dy, dsum = (torch.randn(shape, generator=gen) + 0.5 for _ in range(4))
    w0 = torch.randn(shape[2], generator=gen) * 0.1 + 1.0 if affine != "none" else None
    b0 = torch.randn(shape[2], generator=gen) * 0.1 if affine == "weight+bias" else None
    if dtype == torch.bfloat16:
        x0, r0 = x0.bfloat16(), r0.bfloat16()
        w0 = w0.bfloat16() if w0 is not None else None
        b0 = b0.bfloat16() if b0 is not None else None
    r0 = r0 if residual else None
    ref = _run(naive_layer_norm, torch.float32, x0, r0, w0, b0, dy, dsum)
    out = _run(triton_layer_norm, dtype, x0, r0, w0, b0, dy, dsum)
    fwd, grad = (1e-6, 1e-6) if dtype == torch.float32 else (0.005, 0.008)
    for name, a, b, tol in zip(("y", "s", "dx", "dresidual", "dw", "db"), out, ref,
                               (fwd, fwd, grad, grad, grad, grad), strict=True):
        assert (a is None) == (b is None), name
        if b is not None:
            assert a.dtype == dtype and a.shape == b.shape, name
            assert rel_rms(a, b) <= tol, (name, rel_rms(a, b))
