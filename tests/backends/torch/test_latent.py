"""Perceiver latent cross-attention against torch's own `nn.MultiheadAttention` (kdim/vdim);
the ops after it run on the latent axis (no padding mask, positions of the latents)."""

from __future__ import annotations

import pytest
import torch

import archc
from archc.backends.torch import build
from archc.backends.torch.context import Context
from archc.ir.cost import CostCtx
from archc.passes.estimate_cost import estimate_cost

SPEC = """
model t(tokens) {{
  x = embed(tokens, 50, 24)
  z = latent_attention(x, latents=6, d_latent=32, heads={heads})
  z = z + attention(layernorm(z), heads=4)
  return cls_head(z, classes=3, pool="mean")
}}
"""


@pytest.mark.parametrize("heads", [1, 4])
def test_latent_attention_equals_torch_multihead_attention(heads):
    model = build(archc.loads(SPEC.format(heads=heads), "t.arch").graph, seed=0).eval()
    layer = model.get_submodule("cross_attn")
    graph = archc.loads(SPEC.format(heads=heads), "t.arch").graph
    assert model.num_parameters() == estimate_cost(graph, CostCtx(seq=16)).total.params
    mha = torch.nn.MultiheadAttention(32, heads, kdim=24, vdim=24, bias=True, batch_first=True)
    with torch.no_grad():
        mha.q_proj_weight.copy_(layer.q_proj.weight)
        mha.k_proj_weight.copy_(layer.k_proj.weight)
        mha.v_proj_weight.copy_(layer.v_proj.weight)
        mha.in_proj_bias.copy_(torch.cat((layer.q_proj.bias, layer.k_proj.bias, layer.v_proj.bias)))
        mha.out_proj.weight.copy_(layer.o_proj.weight)
        mha.out_proj.bias.copy_(layer.o_proj.bias)
    x = torch.randn(2, 11, 24)
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[1, 7:] = False
    got = layer(x, ctx=Context(torch.arange(11), mask))
    ref, _ = mha(layer.latents.expand(2, -1, -1), x, x, key_padding_mask=~mask)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_ops_after_the_latents_ignore_the_input_padding():
    model = build(archc.loads(SPEC.format(heads=2), "t.arch").graph, seed=0).eval()
    ids = torch.randint(0, 50, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 5:] = 0
    padded = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(padded[1], model(ids[1:, :5]).logits[0], atol=1e-6, rtol=1e-5)
