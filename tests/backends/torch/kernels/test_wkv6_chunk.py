"""RWKV-6's chunk kernels (`archc::wkv6_chunk` and its backward, templates/wkv6_chunk.py.jinja)
against the recurrence token by token (kernels/wkv6/naive.py), in Triton's interpreter: the output
and the gradients of r, k, v, log w and the bonus u at lengths 1, 15, 63 and 300 (not chunk
multiples; many chunks), widths that are not powers of two (values over two programs' blocks),
decays as strong as RWKV-6's (log w down to −e²), fp32 and bf16 with flash-linear-attention's
criterion; and an RWKV-6 layer trained with them equals its torch build."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from archc.backends.torch.kernels.wkv6.naive import naive_wkv6  # noqa: E402
from archc.backends.torch.kernels.wkv6.triton import triton_wkv6  # noqa: E402
from tests.backends.torch.kernels.criteria import BF16_FORWARD, BF16_GRAD, FP32, rel_rms  # noqa: E402
from tests.backends.torch.kernels.models import assert_trains_as_torch  # noqa: E402

#: flash-linear-attention's bound on decay gradients in bf16
BF16_DECAY_GRAD = 0.02
CASES = [(300, 24, 70, torch.float32), (15, 16, 16, torch.float32), (1, 8, 8, torch.float32),
         (63, 32, 24, torch.bfloat16)]
NAMES = ("dr", "dk", "dv", "dlog_w", "du")


@pytest.mark.parametrize(("t", "key", "value", "dtype"), CASES,
                         ids=[f"T{c[0]}-{c[1]}x{c[2]}-{str(c[3])[6:]}" for c in CASES])
def test_kernel_equals_the_recurrence(t, key, value, dtype):
    g = torch.Generator().manual_seed(0)
    b, h = 1, 2
    r, k = torch.randn(b, h, t, key, generator=g), torch.randn(b, h, t, key, generator=g) * 0.5
    v = torch.randn(b, h, t, value, generator=g)
    log_w = -torch.randn(b, h, t, key, generator=g).clamp(max=2.0).exp()  # w from e^{−e²} to ~1
    u = torch.randn(h, key, generator=g)
    dy = torch.randn(b, h, t, value, generator=g)
    runs = []
    for fn, cast in ((lambda *a: naive_wkv6(*a, torch.zeros(b, h, key, value))[0], torch.float32),
                     (triton_wkv6, dtype)):
        leaves = [x.to(cast).requires_grad_() for x in (r, k, v)] + [x.clone().requires_grad_() for x in (log_w, u)]
        y = fn(*leaves)
        runs.append((y.detach(), torch.autograd.grad((y.float() * dy).sum(), leaves, materialize_grads=True)))
    (want, want_grads), (got, grads) = runs
    fp32 = dtype == torch.float32
    assert rel_rms(got, want) <= (FP32 * 10 if fp32 else BF16_FORWARD)
    for i, (a, w) in enumerate(zip(grads, want_grads, strict=True)):
        if i == 3 and t == 1:  # one token: the decay meets only the zero initial state
            assert float(a.abs().max()) < 1e-6 and float(w.abs().max()) == 0
            continue
        bound = (FP32 * 10) if fp32 else (BF16_DECAY_GRAD if i == 3 else BF16_GRAD)
        assert rel_rms(a, w) <= bound, NAMES[i]


RWKV6 = """model s(tokens) {
  x = embed(tokens, 64, 32)
  x = x + rwkv_time_mix(layernorm(x), version=6, head_size=16, mix_rank=8, decay_rank=8)
  return lm_head(layernorm(x), tied=true)
}
"""


def test_rwkv6_trains_with_the_kernel_as_with_torch():
    assert_trains_as_torch(RWKV6, "wkv6_chunk", ["rwkv_time_mix"], length=21)
