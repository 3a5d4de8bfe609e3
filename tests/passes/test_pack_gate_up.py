"""`pack_gate_up` as IR text in, IR text out (pinned in tests/golden/pack_gate_up.txt; rewrite with
ARCHC_UPDATE_GOLDEN=1 and review), and its record in the fused nodes' meta."""

from __future__ import annotations

import archc
from archc.passes.manager import run
from archc.passes.rewrite import Rewrite, fuse, fusion_report
from tests.frontend.test_golden import _check

SPEC = """
model packed(tokens) {
  x = embed(tokens, 64, 16)
  x = x + attention(rmsnorm(x), heads=2, causal=true)
  x = x + swiglu(rmsnorm(x), hidden=24)
  x = x + geglu(rmsnorm(x), hidden=24, bias=true)
  x = x + mlp(rmsnorm(x), hidden=24)
  return lm_head(rmsnorm(x), tied=true)
}
"""


def test_gated_ffns_are_packed_and_nothing_else_changes():
    g = archc.loads(SPEC, "packed.arch").graph
    out = run(g, ["pack_gate_up"]).graph
    _check("pack_gate_up", out.to_text())
    assert [n.op for n in out.nodes.values()] == [
        {"swiglu": "swiglu_packed", "geglu": "geglu_packed"}.get(n.op, n.op) for n in g.nodes.values()]
    fused, refused = fusion_report(out)
    assert [(f.node, f.op, f.detail) for f in fused] == [("mlp", "swiglu_packed", "mlp: swiglu"),
                                                         ("mlp_1", "geglu_packed", "mlp_1: geglu")]
    assert refused == []
    # the cost model counts the packed op's declared weights: the same parameters
    from archc.ir.cost import CostCtx
    from archc.passes.estimate_cost import estimate_cost

    assert estimate_cost(out, CostCtx()).total.params == estimate_cost(g, CostCtx()).total.params


def test_a_refused_match_is_reported_with_its_reason():
    g = archc.loads(SPEC, "packed.arch").graph
    never = Rewrite("demo", ("swiglu",), lambda g, ns: ns[0], check=lambda g, ns: "the check said no")
    _, refused = fusion_report(fuse(g, never))
    assert [(r.node, r.rewrite, r.detail) for r in refused] == [("mlp", "demo", "the check said no")]
