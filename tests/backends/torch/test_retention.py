"""Multi-scale retention against the paper's parallel form, written here with complex numbers
(Sun et al. 2023, eqs. 5–8), and its chunkwise, multi-token and one-token recurrent forms against
each other."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import archc
from archc.backends.torch import build
from archc.backends.torch.context import Context
from tests.conftest import assert_step_matches_forward

SPEC = """
model ref(tokens) {{
  block layer(x) {{
    x = x + retention(layernorm(x), heads=4, value_factor=2, chunk={chunk})
    return x + swiglu(layernorm(x), hidden=64)
  }}
  x = embed(tokens, 64, 32)
  x = repeat(2, layer)(x)
  return lm_head(layernorm(x), tied=true)
}}
"""


def _model(chunk: int = 8):
    # O0: the equations below read the canonical q/k/v/g projections (O1 packs them into one)
    return build(archc.loads(SPEC.format(chunk=chunk), "ref.arch").graph, seed=0, pipeline="O0").eval()


def _paper_retention(mod, x: torch.Tensor) -> torch.Tensor:
    """MSR(X) by the parallel form: Q, K rotated as complex pairs by e^{inθ}, (Q K^† ⊙ D) V with
    D_nm = γ^(n−m) (n ≥ m), GroupNorm per head without affine weights, swish gate, W_O."""
    b, t, _ = x.shape
    h, dk, dv = mod.heads, mod.dk, mod.dv
    gamma = 1 - 2.0 ** (-5 - torch.arange(h, dtype=torch.float64))
    theta = 1.0 / 10000 ** torch.linspace(0, 1, dk // 2, dtype=torch.float64)
    n = torch.arange(t, dtype=torch.float64)
    phase = torch.polar(torch.ones(t, dk // 2, dtype=torch.float64), n[:, None] * theta)  # e^{inθ}
    x = x.double()

    def heads(w, width):
        return (x @ w.double().T).view(b, t, h, width).transpose(1, 2)

    q = torch.view_as_complex(heads(mod.q_proj.weight, dk).reshape(b, h, t, dk // 2, 2).contiguous()) * phase
    k = torch.view_as_complex(heads(mod.k_proj.weight, dk).reshape(b, h, t, dk // 2, 2).contiguous()) * phase
    v = heads(mod.v_proj.weight, dv)
    scores = (q @ k.conj().transpose(-1, -2)).real / dk ** 0.5  # Re(Q K^†) = rotated real dot product
    dist = n[:, None] - n[None, :]
    D = torch.where(dist >= 0, gamma[:, None, None] ** dist.clamp(min=0), 0.0)
    y = (scores * D) @ v  # [B, H, T, dv]
    y = F.group_norm(y.transpose(1, 2).reshape(b * t, h * dv), h, eps=1e-6).view(b, t, h * dv)
    gate = F.silu(x @ mod.g_proj.weight.double().T)
    return (gate * y) @ mod.out_proj.weight.double().T


@pytest.mark.parametrize("t", [1, 7, 8, 30])
def test_retention_equals_the_parallel_form_of_the_paper(t):
    torch.manual_seed(t)
    model = _model()
    mod = model.get_submodule("layers.0.retention")
    x = torch.randn(2, t, 32)
    got = mod(x, ctx=Context(torch.arange(t)))
    torch.testing.assert_close(got.double(), _paper_retention(mod, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_chunkwise_form_is_independent_of_the_chunk(chunk):
    ids = torch.randint(0, 64, (2, 29))
    ref = _model(8)(ids).logits
    torch.testing.assert_close(_model(chunk)(ids).logits, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunks", [[29], [1, 1, 27], [9, 1, 12, 1, 6], [1] * 29], ids=lambda c: f"{len(c)}-steps")
def test_recurrent_and_chunkwise_steps_equal_the_forward(chunks):
    assert_step_matches_forward(_model(), torch.randint(0, 64, (2, 29)), chunks, atol=1e-5, rtol=1e-5)


def test_padding_contributes_nothing():
    model = _model()
    ids = torch.randint(0, 64, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 11:] = 0
    got = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(got[1, :11], model(ids[1:, :11]).logits[0], atol=1e-5, rtol=1e-5)


def test_state_is_constant_in_context():
    model = build("specs/retnet-tiny.arch", device="meta")
    a, b = model.init_state(1, 16, device="meta"), model.init_state(1, 100_000, device="meta")
    assert [s.shape for s in a] == [s.shape for s in b] == [torch.Size([1, 8, 32, 64])] * 4
