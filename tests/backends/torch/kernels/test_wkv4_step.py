"""RWKV-4's WKV decode kernel (`archc::wkv4_step`, templates/wkv4_step.py.jinja) against the
recurrence's one-token step (kernels/wkv4/step.py) in Triton's interpreter, and an RWKV-4 model
decoding with it as its torch build."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from archc.backends.torch.kernels.wkv4.step import wkv4_step  # noqa: E402
from archc.backends.torch.kernels.wkv4.triton import triton_wkv4_step  # noqa: E402
from tests.backends.torch.kernels.criteria import FP32, rel_rms  # noqa: E402
from tests.backends.torch.kernels.models import assert_decodes_as_torch  # noqa: E402


def test_kernel_equals_the_step():
    g = torch.Generator().manual_seed(0)
    b, width = 3, 1100  # two programs' blocks
    w, u = torch.rand(width, generator=g) * 3, torch.randn(width, generator=g)
    k, v = torch.randn(b, width, generator=g) * 4, torch.randn(b, width, generator=g)  # large k: the stabilizer's job
    state = (torch.randn(b, width, generator=g), torch.rand(b, width, generator=g) + 0.5,
             torch.randn(b, width, generator=g) * 4)
    want, want_state = wkv4_step(w, u, k, v, state)
    got, got_state = triton_wkv4_step(w, u, k, v, state)
    assert rel_rms(got, want) <= FP32
    for a, b_ in zip(got_state, want_state, strict=True):
        assert rel_rms(a, b_) <= FP32


def test_rwkv4_decodes_with_the_kernel_as_with_torch():
    assert_decodes_as_torch("""model r(tokens) {
  x = embed(tokens, 64, 24)
  x = x + rwkv_time_mix(layernorm(x), version=4)
  return lm_head(layernorm(x), tied=true)
}
""", "wkv4_step", ["rwkv_time_mix"])
