"""The mLSTM chunk kernels (`archc::mlstm_chunk` and its backward, templates/mlstm_chunk.py.jinja)
against the recurrence token by token in fp64 (kernels/mlstm/naive.py), in Triton's interpreter:
the output and the gradients of q, k, v, log f and the input gate at lengths 1, 15, 63, 100 and
300 (not chunk multiples; several chunks), widths that are not powers of two (values over two
programs' blocks), input gates up to ±90 (the stabilizer's range), fp32 and bf16; and an mLSTM
layer trained with them equals its torch build.

The fp32 bound is the fp32 rounding floor: mLSTM's h divides by |nᵀq|, which can be small, so
its gradients are ill-conditioned and neither form reaches 1e-6 of the fp64 values; the kernel
must stay within twice the error of PyTorch's own fp32 chunked form (`mlstm_scan`) on the same
inputs. bf16: flash-linear-attention's criterion, against the fp64 recurrence of the same
bf16-rounded inputs (the rounding of the inputs alone moves h by 1–2% through that division)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import torch.nn.functional as F  # noqa: E402

from archc.backends.torch.kernels.mlstm import mlstm_scan, naive_mlstm  # noqa: E402
from archc.backends.torch.kernels.mlstm.triton import triton_mlstm  # noqa: E402
from tests.backends.torch.kernels.criteria import BF16_FORWARD, BF16_GRAD, rel_rms  # noqa: E402
from tests.backends.torch.kernels.models import assert_trains_as_torch  # noqa: E402

#: flash-linear-attention's bound on gate gradients in bf16
BF16_GATE_GRAD = 0.02
CASES = [(300, 70, 64, 3.0, torch.float32), (15, 16, 16, 3.0, torch.float32), (1, 8, 16, 3.0, torch.float32),
         (100, 16, 16, 30.0, torch.float32), (63, 24, 32, 3.0, torch.float32), (63, 24, 32, 1.0, torch.bfloat16)]
NAMES = ("dq", "dk", "dv", "dlog_f", "di")


def _run(fn, leaves, dh):
    h = fn(*leaves)
    return h.detach().double(), [g.double() for g in torch.autograd.grad((h.double() * dh).sum(), leaves,
                                                                          materialize_grads=True)]


@pytest.mark.parametrize(("t", "width", "chunk", "gate", "dtype"), CASES,
                         ids=[f"T{c[0]}-D{c[1]}-C{c[2]}-i{c[3]:g}-{str(c[4])[6:]}" for c in CASES])
def test_kernel_equals_the_recurrence(t, width, chunk, gate, dtype):
    g = torch.Generator().manual_seed(0)
    b, h = 1, 2
    q, v = torch.randn(b, h, t, width, generator=g), torch.randn(b, h, t, width, generator=g)
    k = torch.randn(b, h, t, width, generator=g) / width ** 0.5
    log_f = F.logsigmoid(torch.randn(b, h, t, generator=g) + 3)
    i = torch.randn(b, h, t, generator=g) * gate
    dh = torch.randn(b, h, t, width, generator=g, dtype=torch.float64)

    def leaves(cast):  # the gates stay fp32 (or fp64 for the reference), as the layer computes them
        gates = torch.float64 if cast == torch.float64 else torch.float32
        return [x.to(cast).requires_grad_() for x in (q, k, v)] + [x.to(gates).requires_grad_() for x in (log_f, i)]

    if dtype != torch.float32:  # the reference reads the same rounded inputs: |nᵀq| can be small, so
        q, k, v = (x.to(dtype).float() for x in (q, k, v))  # bf16 rounding alone moves h by ~2% (measured)
    want, want_grads = _run(lambda *a: naive_mlstm(*a)[0], leaves(torch.float64), dh)
    got, grads = _run(lambda *a: triton_mlstm(*a, chunk), leaves(dtype), dh)
    if dtype == torch.float32:
        floor, floor_grads = _run(lambda *a: mlstm_scan(*a, chunk=chunk)[0], leaves(torch.float32), dh)
        assert rel_rms(got, want) <= 2 * rel_rms(floor, want) + 1e-7
        for name, a, f, w in zip(NAMES, grads, floor_grads, want_grads, strict=True):
            assert rel_rms(a, w) <= 2 * rel_rms(f, w) + 1e-7, name
    else:
        assert rel_rms(got, want) <= BF16_FORWARD
        for name, a, w in zip(NAMES, grads, want_grads, strict=True):
            assert rel_rms(a, w) <= (BF16_GATE_GRAD if name in ("dlog_f", "di") else BF16_GRAD), name


MLSTM = """model s(tokens) {
  x = embed(tokens, 64, 32)
  x = x + mlstm(layernorm(x), heads=2, expand=2)
  return lm_head(layernorm(x), tied=true)
}
"""


def test_mlstm_trains_with_the_kernel_as_with_torch():
    assert_trains_as_torch(MLSTM, "mlstm_chunk", ["mlstm"], length=21)
