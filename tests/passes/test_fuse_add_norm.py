"""`fuse_add_norm` as IR text in, IR text out (pinned in tests/golden/fuse_add_norm.txt; rewrite
with ARCHC_UPDATE_GOLDEN=1 and review): a residual add and the norm reading it become one node
with two outputs, read through `item`s; a sum read before its norm stays unfused, with the
reason in the report; a final norm (its sum read by nothing else) makes no `sum` item."""

from __future__ import annotations

import archc
from archc.ir.cost import CostCtx
from archc.ir.types import TupleType
from archc.passes.estimate_cost import estimate_cost
from archc.passes.manager import run
from archc.passes.rewrite import fusion_report
from tests.frontend.test_golden import _check

SPEC = """
model skip(tokens) {
  x = embed(tokens, 64, 16)
  x = x + attention(layernorm(x), heads=2, causal=true)
  x = x + swiglu(rmsnorm(x), hidden=24)
  g = x * x
  x = g + mlp(rmsnorm(x), hidden=24)
  return lm_head(layernorm(x), tied=true)
}
"""


def test_adds_fuse_into_the_norms_that_read_them():
    g = archc.loads(SPEC, "skip.arch").graph
    out = run(g, ["fuse_add_norm"]).graph
    _check("fuse_add_norm", out.to_text())
    fused, refused = fusion_report(out)
    assert [(f.node, f.op, f.detail) for f in fused] == [
        ("norm_1", "add_rmsnorm", "add: add + norm_1: rmsnorm"),
        ("norm_3", "add_layernorm", "add_2: add + norm_3: layernorm")]
    assert [(r.node, r.detail) for r in refused] == [("add_1", "`add_1` is also read by `mul`, before `norm_2`")]
    assert isinstance(out.nodes["norm_1"].type, TupleType)
    assert [n for n in out.nodes if n.startswith("norm_3.")] == ["norm_3.norm"]  # the last sum goes nowhere else
    # the weight keeps the norm's name; the cost model counts the fused op's declared weights
    assert estimate_cost(out, CostCtx()).total.params == estimate_cost(g, CostCtx()).total.params
