"""Mamba's selective scan kernels (`archc::selective_scan` and its backward,
templates/selective_scan.py.jinja) against the scan token by token (kernels/selective_scan/naive.py),
in Triton's interpreter: the output and the gradients of u, Δ, A, B and C at lengths over two
checkpoint chunks and not a multiple of them, over two channel blocks, fp32 and bf16; and a
Mamba layer trained with it equals its torch build."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import torch.nn.functional as F  # noqa: E402

from archc.backends.torch.kernels.selective_scan.naive import naive_selective_scan  # noqa: E402
from archc.backends.torch.kernels.selective_scan.triton import triton_selective_scan  # noqa: E402
from tests.backends.torch.kernels.criteria import BF16_FORWARD, BF16_GRAD, FP32, rel_rms  # noqa: E402
from tests.backends.torch.kernels.models import assert_trains_as_torch  # noqa: E402

#: flash-linear-attention's bound on decay gradients in bf16 (Δ and A here)
BF16_DECAY_GRAD = 0.02
#: (the interpreter runs a program's tokens one by one: small shapes) 40 tokens cross a checkpoint
#: (every 32) and end inside a chunk; 130 channels of 16 states are two channel blocks of 128
CASES = [(1, 40, 130, 16, torch.float32), (1, 15, 8, 4, torch.float32), (1, 20, 24, 6, torch.bfloat16)]


@pytest.mark.parametrize(("batch", "t", "channels", "states", "dtype"), CASES,
                         ids=["T40-E130-two-blocks", "T15", "bf16"])
def test_kernel_equals_the_scan(batch, t, channels, states, dtype):
    g = torch.Generator().manual_seed(0)
    u = torch.randn(batch, t, channels, generator=g)
    dt = F.softplus(torch.randn(batch, t, channels, generator=g))
    a = -torch.rand(channels, states, generator=g) * 2
    b, c = (torch.randn(batch, t, states, generator=g) for _ in range(2))
    dy = torch.randn(batch, t, channels, generator=g)
    runs = []
    for fn, cast in ((lambda *x: naive_selective_scan(*x)[0], torch.float32), (triton_selective_scan, dtype)):
        leaves = [x.to(cast).requires_grad_() for x in (u, dt, a, b, c)]
        y = fn(*leaves)
        runs.append((y.detach(), torch.autograd.grad((y.float() * dy).sum(), leaves)))
    (want, want_grads), (got, grads) = runs
    fp32 = dtype == torch.float32
    assert rel_rms(got, want) <= (FP32 if fp32 else BF16_FORWARD)
    for name, a_, w in zip(("du", "ddt", "dA", "dB", "dC"), grads, want_grads, strict=True):
        bound = FP32 * 10 if fp32 else (BF16_DECAY_GRAD if name in ("ddt", "dA") else BF16_GRAD)
        assert rel_rms(a_, w) <= bound, name


def test_mamba_trains_with_the_kernel_as_with_torch():
    assert_trains_as_torch("""model m(tokens) {
  x = embed(tokens, 64, 24)
  x = x + mamba(rmsnorm(x), d_state=6, expand=2)
  return lm_head(rmsnorm(x), tied=true)
}
""", "selective_scan", ["mamba"])
