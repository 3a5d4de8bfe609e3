"""The GLU gating kernels (archc/backends/triton/templates/glu.py.jinja, bound in
archc/backends/torch/kernels/glu/triton.py) against PyTorch's activations (`naive.py`), in
Triton's interpreter: SwiGLU's SiLU and GeGLU's tanh-GELU, gate and up apart or packed in one
tensor, hidden widths that are not powers of two (one spanning several blocks), lengths 1, 15, 63
and 300; fp32 to rounding, bf16 by flash-linear-attention's criterion against the fp32 reference
(see test_rms_norm.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from archc.backends.torch.kernels.glu.naive import naive_glu  # noqa: E402
from archc.backends.torch.kernels.glu.triton import triton_glu  # noqa: E402
from tests.backends.torch.kernels.criteria import rel_rms  # noqa: E402

#: (rows, hidden): hidden 1,100 spans two blocks of 1,024
SHAPES = [(1, 96), (15, 100), (63, 48), (300, 40), (3, 1100)]


#: fp32 at every shape with both activations, apart and packed (the 300-token case once: the
#: interpreter runs a program per row and block), bf16 at two shapes
CASES = [(torch.float32, s, packed, act) for s in SHAPES for packed in (False, True) for act in ("silu", "gelu_tanh")
         if s[0] != 300 or (not packed and act == "silu")] + [
    (torch.bfloat16, s, packed, act) for s in ((15, 100), (3, 1100)) for packed in (False, True)
    for act in ("silu", "gelu_tanh")]


@pytest.mark.parametrize(("dtype", "shape", "packed", "act"), CASES, ids=lambda c: (
    f"T{c[0]}-h{c[1]}" if isinstance(c, tuple) else str(c).removeprefix("torch.") if isinstance(c, torch.dtype)
    else ("packed" if c is True else "apart" if c is False else c)))
def test_kernel_equals_naive(shape, packed, act, dtype):
    gen = torch.Generator().manual_seed(0)
    t, h = shape
    g0, u0, dy = (torch.randn(1, t, h, generator=gen) * 2 for _ in range(3))
    if dtype == torch.bfloat16:
        g0, u0 = g0.bfloat16(), u0.bfloat16()

    def run(dt, kernel):
        gu = torch.cat((g0, u0), -1).to(dt).requires_grad_()
        g, u = gu[..., :h], gu[..., h:]
        y = (triton_glu(gu, None, act) if packed else triton_glu(g, u, act)) if kernel else naive_glu(g, u, act)
        (y.float() * dy).sum().backward()
        return y.detach(), gu.grad

    (y, d), (y_ref, d_ref) = run(dtype, True), run(torch.float32, False)
    fwd, grad = (1e-6, 1e-6) if dtype == torch.float32 else (0.005, 0.008)
    assert y.dtype == dtype and y.shape == y_ref.shape
    assert rel_rms(y, y_ref) <= fwd, rel_rms(y, y_ref)
    assert rel_rms(d[..., :h], d_ref[..., :h]) <= grad and rel_rms(d[..., h:], d_ref[..., h:]) <= grad
