"""The sLSTM decode-step kernel (`archc::slstm_step`, templates/slstm_step.py.jinja) against the
cell itself (`slstm_cell`), in Triton's interpreter: a head of 40 features (not a power of two) and
of 16, gates large enough to move the stabilizer, an empty memory (m = −1e38) and a running one,
fp32 and bf16 gate inputs; and an xLSTM model with sLSTM layers built with `kernels="triton"`
decodes its torch build's logits and states."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from archc.backends.torch.kernels.common import NEG  # noqa: E402
from archc.backends.torch.kernels.slstm.triton import triton_slstm_step  # noqa: E402
from archc.backends.torch.ops.xlstm import slstm_cell  # noqa: E402
from tests.backends.torch.kernels.criteria import BF16_FORWARD, FP32, rel_rms  # noqa: E402
from tests.backends.torch.kernels.models import assert_decodes_as_torch  # noqa: E402


@pytest.mark.parametrize(("head", "dtype", "empty"), [(40, torch.float32, True), (40, torch.float32, False),
                                                      (16, torch.bfloat16, False)])
def test_kernel_equals_the_cell(head, dtype, empty):
    g = torch.Generator().manual_seed(0)
    b, heads = 3, 2
    gates = torch.randn(b, 4, heads, head, generator=g) * 4
    R = torch.randn(heads, head, 4, head, generator=g) / head ** 0.5
    h, c = torch.randn(b, heads, head, generator=g), torch.randn(b, heads, head, generator=g)
    n = torch.rand(b, heads, head, generator=g) + 0.5
    m = torch.full_like(n, NEG) if empty else torch.randn(b, heads, head, generator=g) * 3
    gates, R = gates.to(dtype), R.to(dtype)  # bf16: the reference reads the same rounded inputs
    want = slstm_cell(gates.float(), R.float(), (h, c, n, m))
    got = triton_slstm_step(gates, R, (h, c, n, m))
    for a, w in zip(got, want, strict=True):
        assert rel_rms(a, w) <= (FP32 * 10 if dtype == torch.float32 else BF16_FORWARD)


XLSTM = """model s(tokens) {
  x = embed(tokens, 64, 32)
  x = x + slstm(layernorm(x), heads=2, d_conv=4)
  x = x + slstm(layernorm(x), heads=4, d_conv=0)
  return lm_head(layernorm(x), tied=true)
}
"""


def test_slstm_layers_decode_with_the_kernel_as_with_torch():
    assert_decodes_as_torch(XLSTM, "slstm_step", ["slstm", "slstm"])
