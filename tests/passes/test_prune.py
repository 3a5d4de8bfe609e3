"""The IR `prune` pass: a plan's settings written into the nodes and the graph re-typed; the spec
`archc prune` writes must lower to the same graph (a disagreement is a diagnostic)."""

from __future__ import annotations

import pytest

import archc
from archc.passes.manager import PassError, run

SPEC = """
model t(tokens) {
  block layer(x) {
    x = x + attention(rmsnorm(x), heads=4, kv_heads=2, causal=true)
    return x + moe(rmsnorm(x), experts=4, top_k=2, expert=swiglu(hidden=32))
  }
  x = embed(tokens, 64, 16)
  x = repeat(2, layer)(x)
  return lm_head(rmsnorm(x))
}
"""


def test_the_plan_is_written_into_the_nodes_and_nested_specs_merge():
    graph = archc.loads(SPEC, "t.arch").graph
    plan = {"layers.0.attn": {"heads": 2, "head_dim": 4},
            "layers.1.moe": {"experts": 3, "expert": {"params": {"hidden": 24}}}}
    out = run(graph, ["prune"], {"prune": plan}).graph
    assert out.nodes["layers.0.attn"].params["heads"] == 2 and out.nodes["layers.0.attn"].params["head_dim"] == 4
    moe = out.nodes["layers.1.moe"].params
    assert moe["experts"] == 3 and moe["expert"]["params"]["hidden"] == 24 and moe["expert"]["op"] == "swiglu"
    assert graph.nodes["layers.0.attn"].params["heads"] == 4  # the input graph is left as it was
    assert out.nodes["layers.1.attn"].params == graph.nodes["layers.1.attn"].params
    assert [n.type for n in out.nodes.values()] == [n.type for n in graph.nodes.values()]  # widths are the ops' own
    assert run(graph, ["prune"]).graph is graph  # no plan: nothing to do

def test_a_plan_that_breaks_a_shape_rule_or_names_no_node_fails_in_the_pass():
    graph = archc.loads(SPEC, "t.arch").graph
    with pytest.raises(PassError) as e:
        run(graph, ["prune"], {"prune": {"layers.0.attn": {"heads": 3}}})  # 3 heads do not divide 16
    assert e.value.pass_name == "prune" and e.value.node == "layers.0.attn"
    with pytest.raises(PassError, match="not a node"):
        run(graph, ["prune"], {"prune": {"layers.9.attn": {"heads": 2}}})

def test_archc_prune_refuses_a_rewrite_that_disagrees_with_the_pass(monkeypatch):
    import archc.backends.torch.prune_spec as ps
    from archc.backends.torch import build
    from archc.backends.torch.prune import PruneError

    model = build(archc.loads(SPEC, "t.arch").graph, seed=0)
    monkeypatch.setattr(ps, "set_call_params", lambda module, edits, positional: (module, set(edits)))
    with pytest.raises(PruneError) as e:  # the text left unedited: it lowers to the unpruned graph
        ps.prune_spec(model, "t.arch", SPEC, ps.PruneOptions({"ffn": 0.25}))
    assert e.value.code == "ARC1201" and "disagree" in e.value.message
