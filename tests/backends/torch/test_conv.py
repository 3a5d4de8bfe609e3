"""Gated convolution against the equation of Dauphin et al. (2017); step == forward."""

from __future__ import annotations

import pytest
import torch

from archc.backends.torch import build
from archc.backends.torch.context import Context
from tests.conftest import assert_step_matches_forward


def test_gated_conv_equals_the_papers_equation():
    """h_t = (Σ_i W_i x_{t−k+1+i} + b) ⊗ σ(Σ_i V_i x_{t−k+1+i} + c), zeros before the start."""
    model = build("specs/gated-conv-lm.arch", seed=0)
    conv = model.get_submodule("layers.0.conv")
    x = torch.randn(2, 11, 256)
    w, bias = conv.conv.weight, conv.conv.bias  # [2d, d, k]: value rows first, then gate rows
    d, k = 256, w.shape[-1]
    xp = torch.cat((torch.zeros(2, k - 1, d), x), 1)
    ref = []
    for t in range(11):
        win = xp[:, t:t + k]  # [B, k, d]
        pre = torch.einsum("oik,bki->bo", w, win) + bias
        ref.append(pre[:, :d] * torch.sigmoid(pre[:, d:]))
    torch.testing.assert_close(conv(x, ctx=Context(torch.arange(11))), torch.stack(ref, 1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunks", [(1,) * 9, (3, 1, 5), (9,)])
def test_gated_conv_lm_decodes_like_forward(chunks):
    model = build("specs/gated-conv-lm.arch", seed=0).eval()
    ids = torch.randint(0, 4096, (2, 9))
    assert_step_matches_forward(model, ids, chunks)
    assert [s.shape for s in model.init_state(2, 9)][:1] == [torch.Size([2, 256, 3])]
