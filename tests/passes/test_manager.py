"""The pass manager: named passes and pipelines, a verifier after each pass, failures that name
the pass and the node, dumps after any pass."""

from __future__ import annotations

import pytest

import archc
from archc.ir.graph import Graph
from archc.passes.manager import PIPELINES, NoOptions, PassError, passes, register_pass, resolve, run

SPEC = """
model t(tokens) {
  x = embed(tokens, 64, 16)
  unused = mlp(x, hidden=8)
  x = x + attention(rmsnorm(x), heads=2, causal=true)
  return lm_head(x)
}
"""


def _graph() -> Graph:
    return archc.loads(SPEC, "t.arch").graph


def test_every_pipeline_names_registered_passes():
    known = passes()
    assert {"infer_shapes", "estimate_cost", "eliminate_dead_code"} <= set(known)
    for name, names in PIPELINES.items():
        assert [p.name for p in resolve(name)] == list(names)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match="pipelines: check"):
        resolve("O9")
    with pytest.raises(ValueError, match=r"passes: .*infer_shapes"):
        resolve(["infer_shapes", "fuse_everything"])
    with pytest.raises(ValueError, match="not in the pipeline"):
        run(_graph(), "check", dump_after=["estimate_cost"])


def test_passes_are_pure_and_records_count_nodes():
    g = _graph()
    before = g.to_text()
    result = run(g, "clean", dump_after=["eliminate_dead_code"])
    assert g.to_text() == before and "mlp" in g.nodes  # the input graph is untouched
    assert "mlp" not in result.graph.nodes
    assert [(r.name, r.nodes_before - r.nodes_after) for r in result.records] == [
        ("infer_shapes", 0), ("eliminate_dead_code", 1), ("estimate_cost", 0)]
    assert "%mlp" not in result.dumps["eliminate_dead_code"]


def test_a_pass_that_breaks_the_graph_is_named_with_the_node():
    @register_pass("test_break_types", "a broken rewrite: retypes the attention's output")
    def broken(graph: Graph, options: NoOptions) -> Graph:
        g = graph.copy()
        n = g.nodes["attn"]
        g.nodes["attn"] = n.model_copy(update={"type": n.type.model_copy(update={"shape": ("batch", "seq", 8)})})
        return g

    with pytest.raises(PassError) as info:
        run(_graph(), ["infer_shapes", "test_break_types"])
    e = info.value
    assert (e.pass_name, e.node, e.code, e.before) == ("test_break_types", "attn", "ARC1002", ("infer_shapes",))
    assert e.span is not None and e.span.line == 5
    # without the verifier the broken type goes through; shape inference after it re-types the node
    assert run(_graph(), ["test_break_types"], verify_each=False).graph.nodes["attn"].type.width == 8
    assert run(_graph(), ["test_break_types", "infer_shapes"], verify_each=False).graph.nodes["attn"].type.width == 16


def test_infer_shapes_retypes_a_rewritten_width_through_the_graph():
    g = _graph()
    emb = g.nodes["embed"]
    g.nodes["embed"] = emb.model_copy(update={"params": {**emb.params, "d": 32}})
    with pytest.raises(PassError) as info:  # stale types: the verifier refuses the edited graph
        run(g, ["estimate_cost"])
    assert info.value.node == "embed" and info.value.code == "ARC1002"
    typed = run(g, ["infer_shapes"]).graph
    assert typed.nodes["attn"].type.shape == ("batch", "seq", 32)
    assert typed.nodes["lm_head"].type.shape == ("batch", "seq", 64)


def test_cost_annotations_add_up_to_the_report():
    from archc.ir.cost import CostCtx
    from archc.passes.estimate_cost import estimate_cost

    ctx = CostCtx(seq=512)
    g = run(_graph(), "summary", {"estimate_cost": ctx}).graph
    total = estimate_cost(_graph(), ctx).total
    assert sum(n.meta["cost"].params for n in g.nodes.values()) == total.params == 64 * 16 * 2 + 8 * 16 * 2 + 8 + 16 \
        + 16 + 4 * 16 * 16
    # the KV cache is the attention node's declared state, bound to the costed length
    assert g.nodes["attn"].meta["cost"].state_bytes == 2 * 2 * 512 * 8 * 2 == total.state_bytes
