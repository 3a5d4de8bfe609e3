"""MoE dispatch against a naive per-token loop; Switch capacity and dropping; losses; export."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

import archc
from archc.backends.torch import build
from archc.backends.torch.ops.moe import load_balancing_loss, route

SPEC = """
model t(tokens) {{
  block decoder(x) {{
    x = x + attention(rmsnorm(x), heads=2, causal=true)
    return x + moe(rmsnorm(x), experts=4, top_k={k}, expert=swiglu(hidden=24){extra})
  }}
  x = embed(tokens, 40, 16)
  x = repeat(2, decoder)(x)
  return lm_head(rmsnorm(x))
}}
"""


def _moe(k: int, extra: str = ""):
    model = build(archc.loads(SPEC.format(k=k, extra=extra), "t.arch").graph, seed=0).eval()
    return model, model.get_submodule("layers.0.moe")


def _naive(moe, x):
    """Per token: softmax router, top-k, renormalize (k > 1), weighted sum of the chosen experts."""
    out = torch.zeros_like(x)
    for n in range(x.shape[0]):
        probs = moe.router(x[n]).softmax(-1)
        w, i = probs.topk(moe.params.top_k)
        if moe.params.top_k > 1:
            w = w / w.sum()
        for wj, ij in zip(w, i, strict=True):
            out[n] += wj * moe.experts[int(ij)](x[n][None])[0]
        for s in moe.shared:
            out[n] += s(x[n][None])[0]
    return out


@pytest.mark.parametrize("k,extra", [(2, ""), (1, ""), (2, ", shared_experts=1"), (3, "")])
def test_dispatch_equals_naive_loop(k, extra):
    from archc.backends.torch.module import Context

    _, moe = _moe(k, extra)
    x = torch.randn(1, 30, 16)
    ctx = Context(torch.arange(30))
    torch.testing.assert_close(moe(x, ctx)[0], _naive(moe, x[0]), atol=1e-5, rtol=1e-5)


def test_switch_capacity_drops_late_tokens_first():
    logits = torch.tensor([[5.0, 0.0], [4.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    gates, _, _ = route(logits, 1, capacity=2)
    # expert 0 is chosen by tokens 0, 1, 2 but holds 2: token 2 is dropped (zero gate)
    assert (gates[:2, 0] > 0).all() and gates[2].sum() == 0 and gates[3, 1] > 0
    # top-2 priority: all first choices are placed before any second choice
    gates2, _, _ = route(torch.tensor([[2.0, 1.0, 0.0], [2.0, 1.0, 0.0], [0.0, 2.0, 1.0]]), 2, capacity=2)
    assert gates2[2, 1] > 0  # token 2's first choice (expert 1) beats token 0/1's second choice
    assert gates2[1, 1] == 0  # so token 1's second choice of expert 1 is dropped


def test_load_balancing_loss_is_one_when_uniform():
    probs = torch.full((8, 4), 0.25)
    top = torch.arange(8).remainder(4)[:, None]
    assert float(load_balancing_loss(probs, top, 4)) == pytest.approx(1.0)


def test_aux_losses_reach_the_output_and_gradients():
    model, _ = _moe(2, ", aux_loss=0.1, z_loss=0.01")
    ids = torch.randint(0, 40, (2, 10))
    out = model(ids, labels=ids)
    assert out.aux_loss is not None and float(out.aux_loss.detach()) > 0
    out.aux_loss.backward()
    assert model.get_parameter("layers.0.moe.router.weight").grad.abs().sum() > 0


def test_moe_exports_with_dynamic_length():
    model, _ = _moe(2, ", capacity_factor=1.25")
    model = model.train()  # capacity dropping (with its cumulative-sum ranks) is on while training

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, ids):
            return self.m(ids).logits

    ep = torch.export.export(Logits(), (torch.randint(0, 40, (2, 16)),),
                             dynamic_shapes={"ids": {0: Dim("b", max=64), 1: Dim("t", min=2, max=512)}})
    assert "nonzero" not in str(ep.graph)
    for t in (5, 40):
        x = torch.randint(0, 40, (3, t))
        torch.testing.assert_close(ep.module()(x), model(x).logits, atol=1e-5, rtol=1e-5)


def test_capacity_drops_tokens_in_training_only():
    """Training: over-capacity assignments are dropped (output zero for a dropped top-1 token);
    eval: dropless, equal to the naive loop, so decoding equals the forward."""
    from archc.backends.torch.module import Context

    _, moe = _moe(1, ", capacity_factor=0.5")
    x = torch.randn(1, 40, 16)
    ctx = Context(torch.arange(40))
    torch.testing.assert_close(moe(x, ctx)[0], _naive(moe, x[0]), atol=1e-5, rtol=1e-5)
    moe.train()
    out = moe(x, ctx)[0]
    dropped = (out.abs().sum(-1) == 0).sum().item()
    assert dropped >= 40 - 4 * moe.capacity(40)
