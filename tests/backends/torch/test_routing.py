"""Adaptive computation time against Graves (2016)'s equations written per position; step ==
forward; the ponder cost reaches the loss."""

from __future__ import annotations

import pytest
import torch

import archc
from archc.backends.torch import build
from archc.backends.torch.context import Context
from tests.conftest import assert_step_matches_forward

UT = """
model t(tokens) {{
  block layer(x) {{
    x = x + attention(layernorm(x), heads=2, causal=true, pos=rope())
    return x + mlp(layernorm(x), hidden=32, act="gelu")
  }}
  x = embed(tokens, 40, 16)
  x = act(x, block=layer, max_steps={steps}, threshold={thr}, ponder_cost=0.01)
  return lm_head(layernorm(x))
}}
"""


def _ut(steps=4, thr=0.9, seed=0):
    return build(archc.loads(UT.format(steps=steps, thr=thr), "t.arch").graph, seed=seed).eval()


@torch.no_grad()
def _graves(act, x):
    """Per position t: p_n = σ(W s_n + b); N(t) = min{n : Σ_{i≤n} p_i > 1 − ε} or the last step;
    R(t) = 1 − Σ_{i<N} p_i; y = Σ_{n<N} p_n s_{n+1} + R s_{N+1}; ponder ρ = N + R."""
    steps, thr = act.params.max_steps, act.params.threshold
    states, probs = [], []
    s = x
    for _ in range(steps):  # the block runs on all positions at every step
        probs.append(torch.sigmoid(act.halting(s)).squeeze(-1))
        s = act.body.run([s], Context(torch.arange(x.shape[1])))[0][0]
        states.append(s)
    b, t, _ = x.shape
    y = torch.zeros_like(x)
    rho = torch.zeros(b, t)
    for i in range(b):
        for j in range(t):
            acc = 0.0
            for n in range(steps):
                p = float(probs[n][i, j])
                if acc + p > thr or n == steps - 1:
                    r = 1.0 - acc
                    y[i, j] += r * states[n][i, j]
                    rho[i, j] = n + 1 + r
                    break
                y[i, j] += p * states[n][i, j]
                acc += p
    return y, rho


@pytest.mark.parametrize("steps,thr", [(4, 0.9), (3, 0.5), (6, 0.99)])
def test_act_equals_graves_equations(steps, thr):
    model = _ut(steps, thr)
    act = model.get_submodule("act")
    with torch.no_grad():  # spread the halting probabilities so positions halt at different steps
        act.halting.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
        act.halting.bias.fill_(-0.5)
    x = torch.randn(2, 9, 16)
    ctx = Context(torch.arange(9))
    y = act(x, ctx=ctx)
    ref, rho = _graves(act, x)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ctx.aux_losses[0], 0.01 * rho.mean(), atol=1e-6, rtol=1e-5)
    assert len(set(rho.floor().flatten().tolist())) > 1  # the test exercises different halting steps


@pytest.mark.parametrize("chunks", [(1,) * 10, (4, 1, 5), (10,)])
def test_act_decodes_like_forward(chunks):
    model = _ut(3, 0.95)
    assert_step_matches_forward(model, torch.randint(0, 40, (2, 10)), chunks)


def test_ponder_cost_trains_the_halting_unit():
    model = _ut().train()
    ids = torch.randint(0, 40, (2, 8))
    out = model(ids, labels=ids)
    assert out.aux_loss is not None and out.aux_loss > 0
    out.loss.backward()
    assert model.get_parameter("act.halting.weight").grad.abs().sum() > 0


MOD = """
model t(tokens) {
  block decoder(x) {
    x = x + attention(rmsnorm(x), heads=2, causal=true, pos=rope())
    return x + swiglu(rmsnorm(x), hidden=32)
  }
  block routed(x) {
    return mod(x, block=decoder, capacity=0.25)
  }
  x = embed(tokens, 40, 16)
  x = repeat(2, routed)(x)
  return lm_head(rmsnorm(x))
}
"""


def _mod_model():
    model = build(archc.loads(MOD, "t.arch").graph, seed=0)
    with torch.no_grad():  # route about half the tokens in eval
        for name, p in model.named_parameters():
            if name.endswith("router.weight"):
                p.normal_(0, 1.0, generator=torch.Generator().manual_seed(3))
    return model, model.get_submodule("layers.0.mod")


def _through_block(mod, x, chosen):
    """The block run on the chosen tokens of each sequence alone, as a sequence of their own whose
    RoPE positions are the tokens' real positions; unchosen tokens unchanged."""
    out = x.clone()
    gate = torch.sigmoid(mod.router(x).squeeze(-1))
    for b in range(x.shape[0]):
        p = chosen[b].nonzero().squeeze(-1)
        if len(p) == 0:
            continue
        y = mod.body.run([x[b:b + 1, p]], Context(p))[0][0][0]
        out[b, p] = x[b, p] + gate[b, p, None] * (y - x[b, p])
    return out


def test_mod_training_routes_the_top_capacity_tokens():
    _, mod = _mod_model()
    mod.train()
    x = torch.randn(2, 12, 16)
    ctx = Context(torch.arange(12))
    got = mod(x, ctx=ctx)
    logits = mod.router(x).squeeze(-1)
    chosen = torch.zeros(2, 12, dtype=torch.bool)
    chosen.scatter_(1, logits.topk(3, dim=1).indices, True)  # ⌈0.25·12⌉ = 3
    torch.testing.assert_close(got, _through_block(mod, x, chosen), atol=1e-5, rtol=1e-5)
    assert len(ctx.aux_losses) == 1  # the router's BCE toward the top-k choice


def test_mod_eval_routes_by_router_probability():
    _, mod = _mod_model()
    mod.eval()
    x = torch.randn(2, 12, 16)
    got = mod(x, ctx=Context(torch.arange(12)))
    chosen = torch.sigmoid(mod.router(x).squeeze(-1)) > 0.5
    assert 0 < chosen.sum() < chosen.numel()
    torch.testing.assert_close(got, _through_block(mod, x, chosen), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunks", [(1,) * 10, (4, 1, 5), (10,)])
def test_mod_decodes_like_eval_forward(chunks):
    model, _ = _mod_model()
    assert_step_matches_forward(model.eval(), torch.randint(0, 40, (2, 10)), chunks)
