"""Mixture-of-experts' grouped matmul (`archc::grouped_matmul`, templates/grouped_matmul.py.jinja)
against a matmul per expert (kernels/grouped_matmul/naive.py), in Triton's interpreter: the output
and the gradients of the rows and of every expert's weight, with uneven groups (one empty, one over
several row tiles) and widths that are not powers of two, fp32 and bf16; and a Mixtral-style MoE
trained with it equals its torch build."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from archc.backends.torch.kernels.grouped_matmul.naive import naive_grouped_matmul  # noqa: E402
from archc.backends.torch.kernels.grouped_matmul.triton import triton_grouped_matmul  # noqa: E402
from tests.backends.torch.kernels.criteria import BF16_FORWARD, BF16_GRAD, FP32, rel_rms  # noqa: E402
from tests.backends.torch.kernels.models import assert_trains_as_torch  # noqa: E402


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_kernel_equals_a_matmul_per_expert(dtype):
    g = torch.Generator().manual_seed(0)
    counts = torch.tensor([5, 0, 70, 33])  # an empty expert; 70 rows: three tiles of 32
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    x, w = torch.randn(int(counts.sum()), 40, generator=g), torch.randn(4, 24, 40, generator=g) * 0.2
    dy = torch.randn(x.shape[0], 24, generator=g)
    runs = []
    for fn, cast in ((naive_grouped_matmul, torch.float32), (triton_grouped_matmul, dtype)):
        leaves = [x.to(cast).requires_grad_(), w.to(cast).requires_grad_()]
        y = fn(*leaves, offsets)
        runs.append((y.detach(), torch.autograd.grad((y.float() * dy).sum(), leaves)))
    (want, want_grads), (got, grads) = runs
    fp32 = dtype == torch.float32
    assert rel_rms(got, want) <= (FP32 if fp32 else BF16_FORWARD)
    for a, b in zip(grads, want_grads, strict=True):
        assert rel_rms(a, b) <= (FP32 if fp32 else BF16_GRAD)


def test_a_mixture_of_experts_trains_with_the_grouped_matmul_as_with_torch():
    assert_trains_as_torch("""model m(tokens) {
  x = embed(tokens, 64, 24)
  x = x + moe(rmsnorm(x), experts=4, top_k=2, expert=swiglu(hidden=40))
  return lm_head(rmsnorm(x), tied=true)
}
""", "grouped_matmul", ["moe"], length=11)
