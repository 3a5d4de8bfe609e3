"""`pack_qkv` as IR text in, IR text out (pinned in tests/golden/pack_qkv.txt; rewrite with
ARCHC_UPDATE_GOLDEN=1 and review): self-attention is packed, GQA's narrower keys and values and
q/k/v biases included; cross-attention is not, and the report says why."""

from __future__ import annotations

import archc
from archc.ir.cost import CostCtx
from archc.ops.registry import REGISTRY
from archc.passes.estimate_cost import estimate_cost
from archc.passes.manager import run
from archc.passes.rewrite import fusion_report
from tests.frontend.test_golden import _check

SPEC = """
model qkv(tokens) {
  x = embed(tokens, 64, 32)
  x = x + attention(rmsnorm(x), heads=4, kv_heads=2, bias=true, causal=true, pos=rope(theta=10000))
  m = rmsnorm(x)
  x = x + attention(rmsnorm(x), kv=m, heads=2)
  x = x + attention(rmsnorm(x), heads=2, kv_heads=1, causal=true, window=4)
  return lm_head(rmsnorm(x), tied=true)
}
"""


def test_self_attention_is_packed_and_cross_attention_is_not():
    g = archc.loads(SPEC, "qkv.arch").graph
    out = run(g, ["pack_qkv"]).graph
    _check("pack_qkv", out.to_text())
    fused, refused = fusion_report(out)
    assert [(f.node, f.op) for f in fused] == [("attn", "attention_packed"), ("attn_2", "attention_packed")]
    assert [(r.node, r.detail) for r in refused] == [
        ("attn_1", "cross-attention: its keys and values read the memory, not x")]
    assert estimate_cost(out, CostCtx()).total == estimate_cost(g, CostCtx()).total
    weights = {w.name: w for w in REGISTRY["attention_packed"].weights(
        REGISTRY["attention"].params(heads=4, kv_heads=2, bias=True), [g.nodes["attn"].type])}
    # q: 4 heads × 8, k and v: 2 kv heads × 8 each, packed along the rows in that order
    assert weights["qkv_proj.weight"].shape == (64, 32)
    assert weights["qkv_proj.weight"].packs == (("q_proj.weight", 32), ("k_proj.weight", 16), ("v_proj.weight", 16))
    assert weights["qkv_proj.bias"].packs == (("q_proj.bias", 32), ("k_proj.bias", 16), ("v_proj.bias", 16))
