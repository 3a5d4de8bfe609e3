"""`fuse_bias_act` as IR text in, IR text out (pinned in tests/golden/fuse_bias_act.txt; rewrite
with ARCHC_UPDATE_GOLDEN=1 and review): a linear read only by its activation becomes one
`linear_act` under the linear's id; a linear read elsewhere too is left alone."""

from __future__ import annotations

import archc
from archc.ir.cost import CostCtx
from archc.passes.estimate_cost import estimate_cost
from archc.passes.manager import run
from archc.passes.rewrite import fusion_report
from tests.frontend.test_golden import _check

SPEC = """
model bias_act(tokens) {
  x = embed(tokens, 64, 16)
  h = gelu(linear(layernorm(x), out=32))
  x = x + linear(h, out=16, bias=false)
  u = linear(layernorm(x), out=16)
  x = x + silu(u) + u
  x = x + linear(relu(linear(layernorm(x), out=24, bias=false)), out=16)
  return lm_head(layernorm(x), tied=true)
}
"""


def test_a_linear_and_its_activation_become_one_node():
    g = archc.loads(SPEC, "bias_act.arch").graph
    out = run(g, ["fuse_bias_act"]).graph
    _check("fuse_bias_act", out.to_text())
    fused, refused = fusion_report(out)
    assert [(f.op, f.rewrite) for f in fused] == [("linear_act", "fuse_bias_act:gelu"),
                                                  ("linear_act", "fuse_bias_act:relu")]
    assert [n.params["act"] for n in out.nodes.values() if n.op == "linear_act"] == ["gelu", "relu"]
    assert not any(n.op in ("gelu", "relu") for n in out.nodes.values())
    assert sum(n.op == "silu" for n in out.nodes.values()) == 1  # `u` is read twice: left alone
    assert refused == []
    assert estimate_cost(out, CostCtx()).total.params == estimate_cost(g, CostCtx()).total.params
    # the fused node keeps the linear's id: the same weight names
    plain, fused_model = archc.build(g, seed=0, pipeline="O0"), archc.build(g, seed=0, pipeline="O2")
    assert plain.state_dict().keys() == fused_model.state_dict().keys()
