"""Graph edits keep the IR's invariants: SSA order, unique ids, spans, no dangling reads."""

from __future__ import annotations

import pytest

import archc
from archc.ir.graph import GraphError, Node
from archc.ir.types import TensorType

SPEC = """
model t(tokens) {
  x = embed(tokens, 64, 16)
  x = x + mlp(layernorm(x), hidden=32)
  return lm_head(x)
}
"""
H = TensorType(shape=("batch", "seq", 16))


def _graph():
    return archc.loads(SPEC, "t.arch").graph


def test_insert_before_and_after_keep_order_and_take_a_neighbours_span():
    g = _graph()
    n = g.insert(Node(id="extra", op="gelu", inputs=("embed",), type=H), after="embed")
    assert list(g.nodes)[:3] == ["tokens", "embed", "extra"]
    assert n.span == g.nodes["embed"].span
    g.insert(Node(id="first", op="gelu", inputs=("embed",), type=H), before="norm")
    assert list(g.nodes).index("first") == list(g.nodes).index("norm") - 1


def test_insert_refuses_reads_of_later_values_and_duplicate_ids():
    g = _graph()
    with pytest.raises(GraphError, match="not defined before"):
        g.insert(Node(id="early", op="gelu", inputs=("mlp",), type=H), before="norm")
    with pytest.raises(GraphError, match="already defined"):
        g.insert(Node(id="mlp", op="gelu", inputs=("embed",), type=H))


def test_replace_rewires_every_use_and_the_outputs():
    g = _graph()
    old = g.nodes["mlp"]
    new = g.replace("mlp", Node(id="ffn", op="swiglu", inputs=old.inputs, params={"hidden": 32}, type=H))
    assert "mlp" not in g.nodes and new.span == old.span
    assert "ffn" in g.nodes["add"].inputs
    g.replace("lm_head", g.nodes["lm_head"].model_copy(update={"id": "head"}))
    assert g.outputs == ["head"]


def test_erase_refuses_a_used_node_and_removes_an_unused_one():
    g = _graph()
    with pytest.raises(GraphError, match="still read by `add`"):
        g.erase("mlp")
    g.replace_uses("mlp", "norm")
    g.erase("mlp")
    assert "mlp" not in g.nodes and g.users_of("norm") == ["add"]


def test_copy_is_independent():
    g = _graph()
    c = g.copy()
    c.nodes["embed"].meta["x"] = 1
    c.replace_uses("add", "embed")
    assert "x" not in g.nodes["embed"].meta and g.outputs == c.outputs == ["lm_head"]
    assert g.nodes["lm_head"].inputs == ("add",) and c.nodes["lm_head"].inputs == ("embed",)


def test_text_form_prints_ties_and_annotations():
    g = archc.loads(SPEC.replace("lm_head(x)", "lm_head(x, tied=true)"), "t.arch").graph
    text = g.to_text()
    assert "ties={weight=embed.weight}" in text
    assert text.startswith("graph t(%tokens: int[batch, seq]) {")
