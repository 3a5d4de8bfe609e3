"""Mamba's selective state update kernel (`archc::selective_step`, templates/selective_step.py.jinja)
against the scan token by token (kernels/selective_scan/naive.py) with the skip and the gate
applied after it as the module does, in Triton's interpreter; and a Mamba model decoding with it
equals its torch build."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import torch.nn.functional as F  # noqa: E402

from archc.backends.torch.kernels.selective_scan.naive import naive_selective_scan  # noqa: E402
from archc.backends.torch.kernels.selective_scan.triton import triton_selective_step  # noqa: E402
from tests.backends.torch.kernels.criteria import BF16_FORWARD, FP32, rel_rms  # noqa: E402
from tests.backends.torch.kernels.models import assert_decodes_as_torch  # noqa: E402


@pytest.mark.parametrize(("channels", "states", "dtype"), [(300, 12, torch.float32), (48, 16, torch.bfloat16)])  # 300 channels: two programs
def test_kernel_equals_the_scan(channels, states, dtype):
    g = torch.Generator().manual_seed(0)
    b = 2
    u, z = (torch.randn(b, channels, generator=g) for _ in range(2))
    dt = F.softplus(torch.randn(b, channels, generator=g))
    a = -torch.rand(channels, states, generator=g) * 4
    d = torch.randn(channels, generator=g)
    bb, c = (torch.randn(b, states, generator=g) for _ in range(2))
    h = torch.randn(b, channels, states, generator=g)
    y_scan, want_h = naive_selective_scan(u[:, None], dt[:, None], a, bb[:, None], c[:, None], h)
    want_y = (y_scan[:, 0] + u * d) * F.silu(z)
    y, new_h = triton_selective_step(u.to(dtype), dt, z.to(dtype), a, d, bb.to(dtype), c.to(dtype), h)
    bound = FP32 if dtype == torch.float32 else BF16_FORWARD
    assert rel_rms(y, want_y) <= bound and rel_rms(new_h, want_h) <= bound


def test_mamba_decodes_with_the_kernel_as_with_torch():
    assert_decodes_as_torch("""model m(tokens) {
  x = embed(tokens, 64, 24)
  x = x + mamba(rmsnorm(x), d_state=6, expand=2)
  return lm_head(rmsnorm(x), tied=true)
}
""", "selective_step", ["mamba"])
