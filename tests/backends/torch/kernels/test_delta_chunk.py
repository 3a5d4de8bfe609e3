"""The gated-delta chunk kernels (`archc::delta_chunk` and its backward,
templates/delta_chunk.py.jinja) against the paper's recurrence token by token
(kernels/gated_delta_rule/naive.py), in Triton's interpreter: the output and the gradients of q, k,
v, log α and β at lengths 1, 15, 63 and 300 (not chunk multiples; several chunks), widths that are
not powers of two, fp32 and bf16 with flash-linear-attention's criterion; and a Gated DeltaNet layer
(grouped value heads, as Qwen3-Next's) trained with them equals its torch build."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import torch.nn.functional as F  # noqa: E402

from archc.backends.torch.kernels.gated_delta_rule.naive import naive_gated_delta_rule  # noqa: E402
from archc.backends.torch.kernels.gated_delta_rule.triton import triton_chunk_gated_delta_rule  # noqa: E402
from tests.backends.torch.kernels.criteria import BF16_FORWARD, BF16_GRAD, FP32, rel_rms  # noqa: E402
from tests.backends.torch.kernels.models import assert_trains_as_torch  # noqa: E402

#: flash-linear-attention's bound on decay and gate gradients in bf16
BF16_GATE_GRAD = 0.02
CASES = [(300, 24, 40, 64, torch.float32), (15, 16, 16, 16, torch.float32), (1, 8, 8, 16, torch.float32),
         (63, 32, 16, 32, torch.bfloat16)]
NAMES = ("dq", "dk", "dv", "dlog_alpha", "dbeta")


@pytest.mark.parametrize(("t", "key", "value", "chunk", "dtype"), CASES,
                         ids=[f"T{c[0]}-{c[1]}x{c[2]}-C{c[3]}-{str(c[4])[6:]}" for c in CASES])
def test_kernel_equals_the_recurrence(t, key, value, chunk, dtype):
    g = torch.Generator().manual_seed(0)
    b, h = 2, 2
    q = F.normalize(torch.randn(b, h, t, key, generator=g), dim=-1) * key ** -0.5
    k = F.normalize(torch.randn(b, h, t, key, generator=g), dim=-1)  # as the layer: l2-normalized keys
    v = torch.randn(b, h, t, value, generator=g)
    log_alpha = -F.softplus(torch.randn(b, h, t, generator=g)) * 0.5
    beta = torch.rand(b, h, t, generator=g)
    do = torch.randn(b, h, t, value, generator=g)
    runs = []
    for fn, cast in ((lambda *a: naive_gated_delta_rule(*a)[0], torch.float32),
                     (lambda *a: triton_chunk_gated_delta_rule(*a, chunk), dtype)):
        leaves = [x.to(cast).requires_grad_() for x in (q, k, v)] + [x.clone().requires_grad_() for x in (log_alpha, beta)]
        o = fn(*leaves)
        runs.append((o.detach(), torch.autograd.grad((o.float() * do).sum(), leaves)))
    (want, want_grads), (got, grads) = runs
    fp32 = dtype == torch.float32
    assert rel_rms(got, want) <= (FP32 if fp32 else BF16_FORWARD)
    for i, (a, w) in enumerate(zip(grads, want_grads, strict=True)):
        if i == 3 and t == 1:  # one token: the decay meets only the zero initial state
            assert float(a.abs().max()) < 1e-6 and float(w.abs().max()) == 0
            continue
        bound = (FP32 * 10) if fp32 else (BF16_GATE_GRAD if i >= 3 else BF16_GRAD)
        assert rel_rms(a, w) <= bound, NAMES[i]


GDN = """model s(tokens) {
  x = embed(tokens, 64, 32)
  x = x + gated_deltanet(rmsnorm(x), heads=1, head_dim=16, v_heads=2, v_head_dim=24, d_conv=4, chunk=16)
  return lm_head(rmsnorm(x), tied=true)
}
"""


def test_gated_deltanet_trains_with_the_kernel_as_with_torch():
    assert_trains_as_torch(GDN, "delta_chunk", ["gated_deltanet"], length=21)
