"""RWKV-4's WKV scan kernels (`archc::wkv4_scan` and its backward, templates/wkv4_scan.py.jinja)
against the reference CPU kernel's recurrence token by token in fp64 (kernels/wkv4/naive.py), in
Triton's interpreter: the output and the gradients of w, u, k and v at lengths 1, 15, 63 and 300,
100 channels (two programs' blocks, not a power of two), keys up to ±15 (the stabilizer's range)
and left padding (keys of −1e38, as the time-mix masks them), fp32 and bf16 with
flash-linear-attention's criterion; and an RWKV-4 layer trained with them equals its torch build."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from archc.backends.torch.kernels.common import NEG  # noqa: E402
from archc.backends.torch.kernels.wkv4.naive import naive_wkv4  # noqa: E402
from archc.backends.torch.kernels.wkv4.triton import triton_wkv4  # noqa: E402
from tests.backends.torch.kernels.criteria import BF16_FORWARD, BF16_GRAD, FP32, rel_rms  # noqa: E402
from tests.backends.torch.kernels.models import assert_trains_as_torch  # noqa: E402

#: flash-linear-attention's bound on decay gradients in bf16
BF16_DECAY_GRAD = 0.02
CASES = [(300, torch.float32, 0), (15, torch.float32, 3), (1, torch.float32, 0), (63, torch.bfloat16, 0)]
NAMES = ("dw", "du", "dk", "dv")


@pytest.mark.parametrize(("t", "dtype", "padding"), CASES,
                         ids=[f"T{c[0]}-{str(c[1])[6:]}-pad{c[2]}" for c in CASES])
def test_kernel_equals_the_recurrence(t, dtype, padding):
    g = torch.Generator().manual_seed(0)
    b, width = 2, 100
    w, u = torch.rand(width, generator=g).exp(), torch.randn(width, generator=g)
    k, v = torch.randn(b, t, width, generator=g) * 5, torch.randn(b, t, width, generator=g)
    k[1, :padding] = NEG  # the second sequence is left-padded
    do = torch.randn(b, t, width, generator=g, dtype=torch.float64)
    runs = []
    for fn, cast, gates in ((lambda *a: naive_wkv4(*a)[0], torch.float64, torch.float64),
                            (triton_wkv4, dtype, torch.float32)):
        leaves = [x.to(gates).requires_grad_() for x in (w, u)] + [x.to(cast).requires_grad_() for x in (k, v)]
        y = fn(*leaves)
        runs.append((y.detach(), torch.autograd.grad((y.double() * do).sum(), leaves, materialize_grads=True)))
    (want, want_grads), (got, grads) = runs
    assert torch.isfinite(got).all() and all(torch.isfinite(x).all() for x in grads)
    fp32 = dtype == torch.float32
    assert rel_rms(got, want) <= (FP32 if fp32 else BF16_FORWARD)
    for i, (a, w_) in enumerate(zip(grads, want_grads, strict=True)):
        if i == 0 and t == 1:  # one token: the decay meets only the empty initial state
            assert float(a.abs().max()) == 0 and float(w_.abs().max()) == 0
            continue
        bound = (FP32 * 10) if fp32 else (BF16_DECAY_GRAD if i < 2 else BF16_GRAD)
        assert rel_rms(a, w_) <= bound, NAMES[i]


RWKV4 = """model s(tokens) {
  x = embed(tokens, 64, 32)
  x = x + rwkv_time_mix(layernorm(x), version=4)
  return lm_head(layernorm(x), tied=true)
}
"""


def test_rwkv4_trains_with_the_kernel_as_with_torch():
    assert_trains_as_torch(RWKV4, "wkv4_scan", ["rwkv_time_mix"], length=21)
