"""RWKV-4's WKV decode kernel (`archc::wkv4_step`, templates/wkv4_step.py.jinja) against the
recurrence's one-token step (kernels/wkv4/step.py) in Triton's interpreter, and an RWKV-4 model
decoding with it as its torch build."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import archc  # noqa: E402
from archc.backends.torch import build  # noqa: E402
from archc.backends.torch.kernels.wkv4.step import wkv4_step  # noqa: E402
from archc.backends.torch.kernels.wkv4.triton import triton_wkv4_step  # noqa: E402
from tests.backends.torch.kernels.criteria import FP32, rel_rms  # noqa: E402


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
    spec = """model r(tokens) {
  x = embed(tokens, 64, 24)
  x = x + rwkv_time_mix(layernorm(x), version=4)
  return lm_head(layernorm(x), tied=true)
}
"""
    graph = archc.loads(spec, "r.arch").graph
    torch_model, triton_model = (build(graph, seed=0, kernels=k).eval() for k in ("torch", "triton"))
    assert [m.op for _, m in triton_model.op_modules() if "wkv4_step" in m.triton_kernels] == ["rwkv_time_mix"]
    prompt = torch.randint(0, 64, (2, 4), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outs = [m.step(prompt, 0, m.init_state(2, 10)) for m in (torch_model, triton_model)]
        for i in range(3):
            token = outs[0][0][:, -1:].argmax(-1)
            outs = [m.step(token, 4 + i, s) for m, (_, s) in zip((torch_model, triton_model), outs, strict=True)]
            torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-5, atol=1e-5)
            for a, b in zip(outs[1][1], outs[0][1], strict=True):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
