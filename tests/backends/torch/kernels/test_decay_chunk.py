"""The chunked scalar-decay kernels (`archc::decay_chunk` and its backward,
templates/decay_chunk.py.jinja) against the recurrence token by token (kernels/ssd/naive.py), in
Triton's interpreter: the output and the gradients of q, k, v and the log-decays at lengths 1, 15,
63 and 300 (not chunk multiples; several chunks), widths that are not powers of two (values over
two programs' blocks), fp32 and bf16 with flash-linear-attention's criterion; and Mamba-2 and RetNet
layers trained with them equal their torch builds."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from archc.backends.torch.kernels.ssd.naive import naive_decay_attention  # noqa: E402
from archc.backends.torch.kernels.ssd.triton import triton_chunked_decay_attention  # noqa: E402
from tests.backends.torch.kernels.criteria import BF16_FORWARD, BF16_GRAD, FP32, rel_rms  # noqa: E402
from tests.backends.torch.kernels.models import assert_trains_as_torch  # noqa: E402

#: flash-linear-attention's bound on decay gradients in bf16
BF16_DECAY_GRAD = 0.02
CASES = [(300, 10, 70, 64, torch.float32), (15, 16, 24, 16, torch.float32), (1, 8, 8, 16, torch.float32),
         (63, 16, 32, 16, torch.bfloat16)]


@pytest.mark.parametrize(("t", "key", "value", "chunk", "dtype"), CASES,
                         ids=[f"T{c[0]}-{c[1]}x{c[2]}-C{c[3]}-{str(c[4])[6:]}" for c in CASES])
def test_kernel_equals_the_recurrence(t, key, value, chunk, dtype):
    g = torch.Generator().manual_seed(0)
    b, h = 2, 3
    q, k = (torch.randn(b, h, t, key, generator=g) for _ in range(2))
    v = torch.randn(b, h, t, value, generator=g)
    log_a = -torch.rand(b, h, t, generator=g) * 0.5
    dy = torch.randn(b, h, t, value, generator=g)
    runs = []
    for fn, cast in ((lambda *a: naive_decay_attention(*a)[0], torch.float32),
                     (lambda *a: triton_chunked_decay_attention(*a, chunk), dtype)):
        leaves = [x.to(cast).requires_grad_() for x in (q, k, v)] + [log_a.clone().requires_grad_()]
        y = fn(*leaves)
        runs.append((y.detach(), torch.autograd.grad((y.float() * dy).sum(), leaves)))
    (want, want_grads), (got, grads) = runs
    fp32 = dtype == torch.float32
    assert rel_rms(got, want) <= (FP32 if fp32 else BF16_FORWARD)
    for i, (a, w) in enumerate(zip(grads, want_grads, strict=True)):
        if i == 3 and t == 1:  # one token: the decay meets only the zero initial state
            assert float(a.abs().max()) < 1e-6 and float(w.abs().max()) == 0
            continue
        bound = (FP32 * 10) if fp32 else (BF16_DECAY_GRAD if i == 3 else BF16_GRAD)
        assert rel_rms(a, w) <= bound, ("dq", "dk", "dv", "dlog_a")[i]


MIXERS = """model s(tokens) {
  x = embed(tokens, 64, 32)
  x = x + mamba2(rmsnorm(x), d_state=12, head_dim=8, chunk=16)
  x = x + retention(rmsnorm(x), heads=2, chunk=16)
  return lm_head(rmsnorm(x), tied=true)
}
"""


def test_mamba2_and_retention_train_with_the_kernels_as_with_torch():
    assert_trains_as_torch(MIXERS, "decay_chunk", ["mamba2", "retention_packed"], length=21)
