"""RWKV-6 (Finch) time-mix against the `rwkv` package (BlinkDL's own inference code: its pure
PyTorch `att_seq_v6_0`, a loop over tokens, and `att_one_v6_0`), weights copied across; every
form of the model; the init. The WKV-6 kernel's own tests are in kernels/test_wkv6.py."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

import archc
from archc.backends.torch import build
from archc.backends.torch.context import Context
from tests.conftest import assert_step_matches_forward

os.environ.setdefault("RWKV_JIT_ON", "0")  # read at import: plain functions, no TorchScript
os.environ.setdefault("RWKV_CUDA_ON", "0")
rwkv_model = pytest.importorskip("rwkv.model")

SPEC = """
model ref(tokens) {
  block layer(x) {
    x = x + rwkv_time_mix(layernorm(x), version=6, head_size=8, mix_rank=4, decay_rank=6)
    return x + rwkv_channel_mix(layernorm(x), hidden=64)
  }
  x = embed(tokens, 64, 32)
  x = repeat(2, layer)(x)
  return lm_head(layernorm(x))
}
"""


def _model():
    return build(archc.loads(SPEC, "ref.arch").graph, seed=0).eval()


def _jittered_time_mix():
    """Layer 1's time-mix with every parameter moved off its init (zero LoRA maps, unit norms)."""
    mod = _model().get_submodule("layers.1.attention")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in mod.parameters():
            p.add_(torch.randn_like(p) * (0.3 if p.dim() < 2 or p.shape[0] == 5 else 0.1))
    return mod


def _reference_weights(mod, one_token: bool = False):
    """Our parameters in the rwkv package's layout: [in, out] matrices, per-head decay/bonus (the
    decay as [H, N, 1] for its one-token path, as its loader reshapes it)."""
    h, n = mod.h, mod.hs
    return dict(
        ln_w=torch.ones(mod.d), ln_b=torch.zeros(mod.d), lx_w=mod.ln_x.weight, lx_b=mod.ln_x.bias,
        x_maa=mod.time_maa_x[0, 0], w_maa=mod.time_maa_w[0, 0], k_maa=mod.time_maa_k[0, 0],
        v_maa=mod.time_maa_v[0, 0], r_maa=mod.time_maa_r[0, 0], g_maa=mod.time_maa_g[0, 0],
        tm_w1=mod.time_maa_w1, tm_w2=mod.time_maa_w2, td_w1=mod.time_decay_w1, td_w2=mod.time_decay_w2,
        t_decay=mod.time_decay.reshape(h, n, 1) if one_token else mod.time_decay.reshape(h, n), t_first=mod.time_faaaa.reshape(h, n, 1),
        kw=mod.key.weight.T, vw=mod.value.weight.T, rw=mod.receptance.weight.T, gw=mod.gate.weight.T,
        ow=mod.output.weight.T,
        **{f"{m}{q}{a}": None for m in "kvrgo" for q in "mr" for a in "xy"},
    )


def test_time_mix_matches_the_rwkv_package():
    """`att_seq_v6_0` applies its own layer norm and residual: give it unit norm weights and
    compare its update with ours on the normalized input."""
    mod = _jittered_time_mix()
    x = torch.randn(40, 32)
    s0 = torch.zeros(mod.h, mod.hs, mod.hs)
    with torch.no_grad():
        ref, _, s_ref = rwkv_model.RWKV.att_seq_v6_0(None, x, torch.zeros(32), s0, **_reference_weights(mod))
        xn = F.layer_norm(x, (32,))
        ours, (_, s_ours) = mod._run(xn[None], Context(torch.arange(40)), mod.init_state(1, 40, x.device, x.dtype))
    torch.testing.assert_close(ours[0], ref - x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s_ours[0], s_ref, atol=1e-5, rtol=1e-5)


def test_time_mix_steps_match_the_rwkv_package():
    mod = _jittered_time_mix()
    x = torch.randn(12, 32)
    state = mod.init_state(1, 12, x.device, x.dtype)
    sx, s = torch.zeros(32), torch.zeros(mod.h, mod.hs, mod.hs)
    with torch.no_grad():
        for t in range(12):
            ref, sx, s = rwkv_model.RWKV.att_one_v6_0(None, x[t], sx, s, **_reference_weights(mod, True))
            ours, state = mod.step(F.layer_norm(x[t:t + 1], (32,))[None], state=state,
                                   ctx=Context(torch.tensor([t]), decoding=True))
            torch.testing.assert_close(ours[0, 0], ref - x[t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunks", [[45], [1, 1, 43], [9, 1, 28, 1, 6]], ids=lambda c: f"{len(c)}-steps")
def test_every_form_agrees(chunks):
    assert_step_matches_forward(_model(), torch.randint(0, 64, (2, 45)), chunks, atol=1e-5, rtol=1e-5)


def test_init_follows_rwkv_lm_x060():
    model = _model()
    first, last = model.get_submodule("layers.0.attention"), model.get_submodule("layers.1.attention")
    assert first.time_decay[0, 0, 0].item() == pytest.approx(-6.0) and first.time_decay[0, 0, -1].item() == pytest.approx(-1.0)
    assert not first.time_maa_w1.any() and first.time_maa_w2.abs().max() <= 0.01
    torch.testing.assert_close(first.time_maa_k[0, 0], 1 - torch.arange(32) / 32)  # 1 − (i/d)^1 at layer 0
    assert (last.time_faaaa.flatten()[:3] - torch.tensor([1.0, 0.9677, 0.9355]) - torch.tensor([0.0, 0.1, -0.1])).abs().max() < 1e-3
