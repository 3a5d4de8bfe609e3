"""Memory layers against the papers' equations, written token by token: the Compressive
Transformer's attention over raw and compressed memories and its attention-reconstruction loss
(Rae et al., 2020); the Recurrent Memory Transformer's segment recurrence (Bulatov et al., 2022)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.export import Dim

import archc
from archc.backends.torch import build
from archc.backends.torch.context import Context
from tests.conftest import (
    assert_exported_step_matches_forward,
    assert_step_matches_forward,
    exportable_logits,
)

D, H = 16, 2


def _compressive_model(mem: int, cmem: int, ratio: int, extra: str = ""):
    spec = f"""
model cm(tokens) {{
  x = embed(tokens, 50, {D})
  x = x + compressive_memory(x, heads={H}, mem_len={mem}, cmem_len={cmem}, ratio={ratio}{extra})
  return lm_head(x)
}}"""
    return build(archc.loads(spec, "cm.arch").graph, seed=0)


def _layer(model):
    return model.get_submodule("attn")


def _reference(layer, x: torch.Tensor, valid: torch.Tensor | None = None):
    """Per token t (paper §3.1, with the memory pushed c tokens at a time): keys are the slots
    j ∈ [J_t − S, J_t) of `F.conv1d(x, kernel = stride = c)` and the raw inputs r_t … t, where
    r_t = c·⌊max(0, t − M)/c⌋ and J_t = r_t / c. Also returns the attention-reconstruction error
    per query (paper §3.2) and which queries see any slot."""
    p = layer.params
    c, m, s = p.ratio, p.mem_len, p.cmem_len
    b, t, d = x.shape
    hd = d // H
    wq, wk, wv, wo = (getattr(layer, f"{n}_proj").weight for n in "qkvo")
    slots = F.conv1d(x.transpose(1, 2), layer.compress.weight, layer.compress.bias, stride=c).transpose(1, 2)
    heads = lambda y: y.view(y.shape[0], H, hd)  # noqa: E731
    out = torch.zeros(b, t, d)
    errs = torch.zeros(b, t)
    seen = torch.zeros(b, t, dtype=torch.bool)
    for bi in range(b):
        for ti in range(t):
            r = c * (max(0, ti - m) // c)
            js = [j for j in range(max(0, r // c - s), r // c)
                  if valid is None or bool(valid[bi, j * c:(j + 1) * c].all())]
            raw = [u for u in range(r, ti + 1) if valid is None or bool(valid[bi, u])]
            mem = torch.cat((slots[bi, js], x[bi, raw]))
            q = heads(x[bi, ti:ti + 1] @ wq.T)  # [1, H, hd]
            k, v = heads(mem @ wk.T), heads(mem @ wv.T)  # [K, H, hd]
            a = torch.softmax(torch.einsum("qhe,khe->hk", q, k) / math.sqrt(hd), -1)
            out[bi, ti] = torch.einsum("hk,khe->he", a, v).reshape(d) @ wo.T
            if js:
                toks = [u for j in js for u in range(j * c, (j + 1) * c)]
                kr, vr = heads(x[bi, toks] @ wk.T), heads(x[bi, toks] @ wv.T)
                ar = torch.softmax(torch.einsum("qhe,khe->hk", q, kr) / math.sqrt(hd), -1)
                kc, vc = heads(slots[bi, js] @ wk.T), heads(slots[bi, js] @ wv.T)
                ac = torch.softmax(torch.einsum("qhe,khe->hk", q, kc) / math.sqrt(hd), -1)
                diff = torch.einsum("hk,khe->he", ac, vc) - torch.einsum("hk,khe->he", ar, vr)
                errs[bi, ti] = diff.pow(2).mean()
                seen[bi, ti] = True
    return out, errs, seen


@pytest.mark.parametrize("mem,cmem,ratio", [(5, 3, 2), (4, 2, 3), (1, 4, 1), (6, 8, 4)])
def test_compressive_equals_paper_equations(mem, cmem, ratio):
    layer = _compressive_model(mem, cmem, ratio).eval()
    attn = _layer(layer)
    x = torch.randn(2, 41, D)
    with torch.no_grad():
        ref, _, _ = _reference(attn, x)
        got = attn(x, ctx=Context(torch.arange(41)))
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_compressive_padding_and_reconstruction_loss():
    model = _compressive_model(4, 3, 2).train()
    attn = _layer(model)
    x = torch.randn(2, 30, D)
    valid = torch.ones(2, 30, dtype=torch.bool)
    valid[0, 25:] = False
    valid[1, :3] = False  # left padding: slot 1 (tokens 2, 3) is only half real and never attended
    ctx = Context(torch.arange(30), valid)
    got = attn(x, ctx=ctx)
    with torch.no_grad():
        ref, errs, seen = _reference(attn, x, valid)
    torch.testing.assert_close(got[valid], ref[valid], atol=1e-5, rtol=1e-5)
    (loss,) = ctx.aux_losses
    w = (seen & valid).float()  # padded queries do not count
    torch.testing.assert_close(loss, (errs * w).sum() / w.sum(), atol=1e-6, rtol=1e-5)
    # the loss trains the compression alone (stop-gradient into the attention's projections)
    loss.backward()
    assert attn.compress.weight.grad.abs().sum() > 0
    assert all(getattr(attn, f"{n}_proj").weight.grad is None for n in "qkvo")


@pytest.mark.parametrize("mem,cmem,ratio", [(5, 3, 2), (4, 2, 3), (1, 4, 1), (6, 8, 4)])
def test_compressive_step_matches_forward(mem, cmem, ratio):
    model = _compressive_model(mem, cmem, ratio).eval()
    ids = torch.randint(0, 50, (2, 60))
    for chunks in ([1] * 60, [7, 1, 1, 13, 2, 30, 6], [60], [3, 40, 17]):
        assert_step_matches_forward(model, ids, chunks)


def test_compressive_spec_trains_and_decodes():
    model = build("specs/compressive-tiny.arch", seed=0)
    assert model.num_parameters() == archc.summary("specs/compressive-tiny.arch").total.params
    ids = torch.randint(0, 4096, (2, 300))
    out = model(ids, labels=ids)
    assert out.aux_loss is not None and out.aux_loss > 0
    out.loss.backward()
    assert model.get_parameter("layers.0.attn.compress.weight").grad is not None
    model.eval()
    assert_step_matches_forward(model, ids, [1, 140, 2, 157], atol=1e-4, rtol=1e-4)


def test_compressive_exports_with_dynamic_length():
    model = _compressive_model(5, 3, 2).eval()

    ep = torch.export.export(exportable_logits(model), (torch.randint(0, 50, (2, 9)),),
                             dynamic_shapes={"ids": {0: Dim("batch", max=64), 1: Dim("seq", min=2, max=1024)}})
    for b, t in ((1, 3), (3, 50), (2, 129)):
        ids = torch.randint(0, 50, (b, t))
        torch.testing.assert_close(ep.module()(ids), model(ids).logits, atol=1e-5, rtol=1e-5)


def _rmt_model(memory: int = 2, segment: int = 5, causal: str = "true"):
    spec = f"""
model rmt(tokens) {{
  block dec(x) {{
    x = x + attention(rmsnorm(x), heads={H}, causal={causal}, pos=rope())
    return x + swiglu(rmsnorm(x), hidden=24)
  }}
  x = embed(tokens, 50, {D})
  x = recurrent_memory(x, block=repeat(2, dec), memory={memory}, segment={segment})
  return lm_head(rmsnorm(x))
}}"""
    return build(archc.loads(spec, "rmt.arch").graph, seed=0).eval()


def _rmt_reference(rmt, x: torch.Tensor) -> torch.Tensor:
    """Bulatov et al. §3, decoder form: H_s = body([M_s; X_s; M_s]), the segment's outputs are the
    middle of H_s and M_{s+1} its last M rows; the last segment is as long as what is left."""
    m, seg = rmt.params.memory, rmt.params.segment
    mem = rmt.memory[None].expand(x.shape[0], -1, -1)
    ys = []
    for s in range(0, x.shape[1], seg):
        xs = x[:, s:s + seg]
        h = torch.cat((mem, xs, mem), 1)
        (out,), _ = rmt.body.run([h], Context(torch.arange(h.shape[1])))
        ys.append(out[:, m:m + xs.shape[1]])
        mem = out[:, -m:]
    return torch.cat(ys, 1)


@pytest.mark.parametrize("t", [3, 5, 12, 23])
def test_rmt_equals_segment_recurrence(t):
    # fp64: the two compute the same sums in another order, so fp32 rounding (~1e-5 after a few
    # layers) would say nothing about the algorithm
    model = _rmt_model().double()
    rmt = model.get_submodule("rmt")
    x = torch.randn(2, t, D, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(rmt(x, ctx=Context(torch.arange(t))), _rmt_reference(rmt, x), atol=1e-10, rtol=1e-10)


def test_rmt_memory_carries_information_and_gradients():
    model = _rmt_model().train()
    ids = torch.randint(0, 50, (1, 15))
    emb = model.get_submodule("embed")(ids, ctx=None).detach().requires_grad_(True)
    rmt = model.get_submodule("rmt")
    y = rmt(emb, ctx=Context(torch.arange(15)))
    y[0, 12].sum().backward()  # third segment
    reach = emb.grad[0].abs().sum(-1)
    assert (reach[:10] > 0).all()  # earlier segments reach it only through the memory (BPTT)
    assert rmt.memory.grad.abs().sum() > 0  # the learned initial memory is trained


def test_rmt_bidirectional_body_ignores_the_padding_of_the_last_segment():
    model = _rmt_model(causal="false").double()
    rmt = model.get_submodule("rmt")
    x = torch.randn(2, 12, D, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(rmt(x, ctx=Context(torch.arange(12))), _rmt_reference(rmt, x), atol=1e-10, rtol=1e-10)


def test_rmt_step_matches_forward_across_segments():
    model = _rmt_model()
    ids = torch.randint(0, 50, (2, 23))
    for chunks in ([1] * 23, [5, 5, 5, 5, 3], [7, 1, 9, 6], [23], [4, 2, 11, 6]):
        assert_step_matches_forward(model, ids, chunks)


def test_rmt_exports_with_dynamic_length_and_segment_count():
    model = _rmt_model()
    ep = torch.export.export(exportable_logits(model), (torch.randint(0, 50, (3, 9)),),
                             dynamic_shapes={"ids": {0: Dim("batch", max=64), 1: Dim("seq", min=2, max=1024)}})
    for b, t in ((1, 3), (2, 5), (4, 23), (2, 61)):
        ids = torch.randint(0, 50, (b, t))
        torch.testing.assert_close(ep.module()(ids), model(ids).logits, atol=1e-5, rtol=1e-5)


def test_rmt_exported_step_crosses_segment_boundaries():
    """Segments of 5 tokens: the read and write branches (`torch.cond`) run inside the export."""
    assert_exported_step_matches_forward(_rmt_model(), 50, 13, atol=1e-5)


def test_memory_models_generate_speculatively_as_greedily():
    """Speculative decoding restarts these (non-positional) states from the verified prefix: the
    output must equal plain greedy decoding, across RMT segment boundaries."""
    draft = _rmt_model(memory=1, segment=3)
    ids = torch.randint(0, 50, (1, 7))
    for target in (_rmt_model(), _compressive_model(4, 2, 2)):
        greedy = target.generate(ids, max_new_tokens=14)
        torch.testing.assert_close(target.generate(ids, max_new_tokens=14, draft=draft, num_draft_tokens=3), greedy)
