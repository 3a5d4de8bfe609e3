"""The recurrent decode-step kernel (`archc::recurrent_step`, templates/recurrent_step.py.jinja) in
Triton's interpreter, each rule against its reference: the scalar-decay rule against the
recurrence token by token (kernels/ssd/naive.py), the gated delta rule and RWKV-6's WKV against
their one-token steps (kernels/gated_delta_rule/step.py, kernels/wkv6/step.py, kernels/mlstm/step.py) — both state layouts,
widths that are not powers of two (values over two programs' blocks), fp32 and bf16 inputs; and a
model of Mamba-2, RetNet, Gated DeltaNet, RWKV-6, mLSTM, causal linear attention and Performer layers
decodes with it as its torch build (linear attention: the decay rule with log a = 0 over [S | z])."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from archc.backends.torch.kernels.gated_delta_rule.step import gated_delta_rule_step  # noqa: E402
from archc.backends.torch.kernels.gated_delta_rule.triton import triton_delta_rule_step  # noqa: E402
from archc.backends.torch.kernels.mlstm.step import mlstm_step  # noqa: E402
from archc.backends.torch.kernels.mlstm.triton import triton_mlstm_step  # noqa: E402
from archc.backends.torch.kernels.ssd.naive import naive_decay_attention  # noqa: E402
from archc.backends.torch.kernels.ssd.triton import triton_decay_step  # noqa: E402
from archc.backends.torch.kernels.wkv6.step import wkv6_step  # noqa: E402
from archc.backends.torch.kernels.wkv6.triton import triton_wkv6_step  # noqa: E402
from tests.backends.torch.kernels.criteria import BF16_FORWARD, FP32, rel_rms  # noqa: E402
from tests.backends.torch.kernels.models import assert_decodes_as_torch  # noqa: E402

CASES = [("decay", 10, 70, False, torch.float32), ("decay", 16, 24, True, torch.float32),
         ("decay", 10, 70, True, torch.bfloat16), ("delta", 12, 70, False, torch.float32),
         ("delta", 16, 24, False, torch.bfloat16), ("wkv", 12, 70, False, torch.float32),
         ("wkv", 16, 16, False, torch.bfloat16), ("mlstm", 70, 70, False, torch.float32),
         ("mlstm", 16, 16, False, torch.bfloat16)]


@pytest.mark.parametrize(("rule", "key", "value", "v_major", "dtype"), CASES,
                         ids=[f"{c[0]}-{c[1]}x{c[2]}{'-vmajor' if c[3] else ''}-{str(c[4])[6:]}" for c in CASES])
def test_kernel_equals_its_reference(rule, key, value, v_major, dtype):
    g = torch.Generator().manual_seed(0)
    b, h = 2, 3
    q, k = (torch.randn(b, h, key, generator=g) for _ in range(2))
    if rule == "delta":  # Gated DeltaNet's keys are unit vectors, β ∈ (0, 1)
        k = torch.nn.functional.normalize(k, dim=-1)
    v = torch.randn(b, h, value, generator=g)
    state = torch.randn(b, h, key, value, generator=g)
    low = lambda t: t.to(dtype)  # noqa: E731 - the model-dtype inputs; decays and states stay fp32
    if rule == "decay":
        log_a = -torch.rand(b, h, generator=g)
        want_y, want_s = naive_decay_attention(q[:, :, None], k[:, :, None], v[:, :, None], log_a[:, :, None], state)
        want_y = want_y[:, :, 0]
        stored = state.transpose(-1, -2).contiguous() if v_major else state
        y, s = triton_decay_step(low(q), low(k), low(v), log_a, stored, v_major=v_major)
        s = s.transpose(-1, -2) if v_major else s
    elif rule == "delta":
        log_a, beta = -torch.rand(b, h, generator=g), torch.rand(b, h, generator=g)
        want_y, want_s = gated_delta_rule_step(q, k, v, log_a, beta, state)
        y, s = triton_delta_rule_step(low(q), low(k), low(v), log_a, beta, state)
    elif rule == "mlstm":
        log_f, i = -torch.rand(b, h, generator=g), torch.randn(b, h, generator=g)
        memory = (state, torch.randn(b, h, key, generator=g), torch.randn(b, h, generator=g))
        want_y, (want_s, want_n, want_m) = mlstm_step(q, k, v, log_f, i, memory)
        y, (s, n, m) = triton_mlstm_step(low(q), low(k), low(v), log_f, i, memory)
        bound = FP32 if dtype == torch.float32 else BF16_FORWARD
        assert rel_rms(n, want_n) <= bound and rel_rms(m, want_m) <= FP32
    else:
        log_w, u = -torch.rand(b, h, key, generator=g), torch.randn(h, key, generator=g)
        want_y, want_s = wkv6_step(q, k, v, log_w, u, state)
        y, s = triton_wkv6_step(low(q), low(k), low(v), log_w, u, state)
    bound = FP32 if dtype == torch.float32 else BF16_FORWARD
    assert y.dtype == s.dtype == torch.float32
    assert rel_rms(y, want_y) <= bound and rel_rms(s, want_s) <= bound


RECURRENT = """model r(tokens) {
  x = embed(tokens, 64, 32)
  x = x + mamba2(rmsnorm(x), d_state=12, head_dim=8, chunk=8)
  x = x + retention(rmsnorm(x), heads=2, chunk=8)
  x = x + gated_deltanet(rmsnorm(x), heads=2, head_dim=8, chunk=8)
  x = x + rwkv_time_mix(rmsnorm(x), version=6, head_size=8, mix_rank=4, decay_rank=4)
  x = x + mlstm(rmsnorm(x), heads=2, qkv_block=4)
  x = x + linear_attention(rmsnorm(x), heads=2, causal=true)
  x = x + performer_attention(rmsnorm(x), heads=2, features=12, causal=true)
  return lm_head(rmsnorm(x), tied=true)
}
"""


def test_recurrent_mixers_decode_with_the_kernel_as_with_torch():
    assert_decodes_as_torch(RECURRENT, "recurrent_step",
                            ["gated_deltanet", "linear_attention", "mamba2", "mlstm", "performer_attention",
                             "retention_packed", "rwkv_time_mix"], prompt=5)
