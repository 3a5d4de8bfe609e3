"""`pack_in_proj` as IR text in, IR text out (pinned in tests/golden/pack_in_proj.txt; rewrite with
ARCHC_UPDATE_GOLDEN=1 and review): retention's q, k, v and g become one projection; Gated
DeltaNet and RWKV's time mix match and are reported with why they stay as they are; Mamba-2's
single in_proj does not match."""

from __future__ import annotations

import archc
from archc.ir.cost import CostCtx
from archc.ops.registry import REGISTRY
from archc.passes.estimate_cost import estimate_cost
from archc.passes.manager import run
from archc.passes.rewrite import fusion_report
from tests.frontend.test_golden import _check

SPEC = """
model in_proj(tokens) {
  x = embed(tokens, 64, 32)
  x = x + retention(layernorm(x), heads=2, value_factor=2, chunk=4)
  x = x + gated_deltanet(rmsnorm(x), heads=2, head_dim=8, v_heads=2, v_head_dim=8, d_conv=4)
  x = x + rwkv_time_mix(layernorm(x), version=4)
  x = x + mamba2(rmsnorm(x), d_state=8, head_dim=8, chunk=4)
  return lm_head(layernorm(x), tied=true)
}
"""


def test_retention_is_packed_and_the_others_are_reported():
    g = archc.loads(SPEC, "in_proj.arch").graph
    out = run(g, ["pack_in_proj"]).graph
    _check("pack_in_proj", out.to_text())
    assert [n.op for n in out.nodes.values()] == [
        "retention_packed" if n.op == "retention" else n.op for n in g.nodes.values()]
    fused, refused = fusion_report(out)
    assert [(f.node, f.op, f.detail) for f in fused] == [("retention", "retention_packed", "retention: retention")]
    assert [(r.node, r.rewrite) for r in refused] == [("mixer", "pack_in_proj:gated_deltanet"),
                                                      ("attention", "pack_in_proj:rwkv_time_mix")]
    assert "decay" in refused[0].detail and "token-shift" in refused[1].detail
    assert estimate_cost(out, CostCtx()).total == estimate_cost(g, CostCtx()).total
    p = REGISTRY["retention"].params(heads=2, value_factor=2)
    weights = {w.name: w for w in REGISTRY["retention_packed"].weights(p, [g.nodes["retention"].type])}
    # q and k: 2 heads × 16, v and g: 2 heads × 32, packed along the rows in that order
    assert weights["qkvg_proj.weight"].shape == (2 * 32 + 2 * 64, 32)
    assert weights["qkvg_proj.weight"].packs == (("q_proj.weight", 32), ("k_proj.weight", 32),
                                                 ("v_proj.weight", 64), ("g_proj.weight", 64))
