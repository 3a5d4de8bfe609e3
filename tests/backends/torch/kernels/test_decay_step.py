"""The scalar-decay recurrence's decode-step kernel (`archc::decay_step`, templates/decay_step.py.jinja)
against the recurrence token by token (kernels/ssd/naive.py), in Triton's interpreter: both state
layouts, key and value widths that are not powers of two (values over two programs' blocks), fp32
and bf16 inputs; and Mamba-2 and RetNet models decoding with it equal their torch builds."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import archc  # noqa: E402
from archc.backends.torch import build  # noqa: E402
from archc.backends.torch.kernels.ssd.naive import naive_decay_attention  # noqa: E402
from archc.backends.torch.kernels.ssd.triton import triton_decay_step  # noqa: E402
from tests.backends.torch.kernels.criteria import BF16_FORWARD, FP32, rel_rms  # noqa: E402


@pytest.mark.parametrize(("key", "value", "v_major", "dtype"), [
    (10, 70, False, torch.float32), (16, 24, True, torch.float32), (10, 70, True, torch.bfloat16)])
def test_kernel_equals_the_recurrence(key, value, v_major, dtype):
    g = torch.Generator().manual_seed(0)
    b, h = 2, 3
    q, k = (torch.randn(b, h, key, generator=g) for _ in range(2))
    v = torch.randn(b, h, value, generator=g)
    log_a = -torch.rand(b, h, generator=g)
    state = torch.randn(b, h, key, value, generator=g)
    want_y, want_s = naive_decay_attention(q[:, :, None], k[:, :, None], v[:, :, None], log_a[:, :, None], state)
    stored = state.transpose(-1, -2).contiguous() if v_major else state
    y, s = triton_decay_step(q.to(dtype), k.to(dtype), v.to(dtype), log_a, stored, v_major=v_major)
    s = s.transpose(-1, -2) if v_major else s
    bound = FP32 if dtype == torch.float32 else BF16_FORWARD
    assert y.dtype == s.dtype == torch.float32
    assert rel_rms(y, want_y[:, :, 0]) <= bound and rel_rms(s, want_s) <= bound


HYBRID = """model r(tokens) {
  x = embed(tokens, 64, 32)
  x = x + mamba2(rmsnorm(x), d_state=12, head_dim=8, chunk=8)
  x = x + retention(rmsnorm(x), heads=2, chunk=8)
  return lm_head(rmsnorm(x), tied=true)
}
"""


def test_mamba2_and_retention_decode_with_the_kernel_as_with_torch():
    graph = archc.loads(HYBRID, "r.arch").graph
    torch_model, triton_model = (build(graph, seed=0, kernels=k).eval() for k in ("torch", "triton"))
    assert sorted(m.op for _, m in triton_model.op_modules() if "decay_step" in m.triton_kernels) == \
        ["mamba2", "retention_packed"]
    prompt = torch.randint(0, 64, (2, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        states = [m.init_state(2, 12) for m in (torch_model, triton_model)]
        outs = [m.step(prompt, 0, s) for m, s in zip((torch_model, triton_model), states, strict=True)]
        for i in range(4):
            token = outs[0][0][:, -1:].argmax(-1)
            outs = [m.step(token, 5 + i, s) for m, (_, s) in zip((torch_model, triton_model), outs, strict=True)]
            torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-5, atol=1e-5)
            for a, b in zip(outs[1][1], outs[0][1], strict=True):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
