"""The verifier accepts every lowered spec and names the node of each broken invariant."""

from __future__ import annotations

import pytest

import archc
from archc.passes.verify import VerifyError, verify
from tests.conftest import SPECS

SPEC = """
model t(tokens) {
  block b(x) {
    return x + mlp(layernorm(x), hidden=8)
  }
  x = embed(tokens, 64, 16)
  x = mod(x, block=b, capacity=0.5)
  return lm_head(x, tied=true)
}
"""


def _graph():
    return archc.loads(SPEC, "t.arch").graph


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_every_spec_verifies(spec):
    verify(archc.load(str(spec)).graph)


def _broken(edit, match: str, node: str | None) -> None:
    g = _graph()
    edit(g)
    with pytest.raises(VerifyError, match=match) as info:
        verify(g)
    assert info.value.node == node


def test_each_broken_invariant_is_named():
    def dangling(g):
        g.nodes["lm_head"] = g.nodes["lm_head"].model_copy(update={"inputs": ("nowhere",)})

    def out_of_order(g):
        g.nodes["embed"] = g.nodes["embed"].model_copy(update={"inputs": ("mod",)})

    def no_span(g):
        g.nodes["mod"] = g.nodes["mod"].model_copy(update={"span": None})

    def bad_params(g):
        g.nodes["embed"] = g.nodes["embed"].model_copy(update={"params": {"vocab": 0, "d": 16}})

    def bad_tie(g):
        g.nodes["lm_head"] = g.nodes["lm_head"].model_copy(update={"ties": {"weight": "gone.weight"}})

    def bad_body(g):
        body = g.nodes["mod"].body.copy()
        body.nodes["mlp"] = body.nodes["mlp"].model_copy(update={"params": {"hidden": 8, "bias": "maybe"}})
        g.nodes["mod"] = g.nodes["mod"].model_copy(update={"body": body})

    def lost_body(g):
        g.nodes["mod"] = g.nodes["mod"].model_copy(update={"body": None})

    def bad_output(g):
        g.outputs = ["nothing"]

    _broken(dangling, "reads `nowhere`, which is not defined", "lm_head")
    _broken(out_of_order, "reads `mod`, which is defined after it", "embed")
    _broken(no_span, "no source span", "mod")
    _broken(bad_params, "schema", "embed")
    _broken(bad_tie, "no node `gone`", "lm_head")
    _broken(bad_body, "schema", "mlp")
    _broken(lost_body, "wraps a block", "mod")
    _broken(bad_output, "not defined", "nothing")


def test_a_node_with_several_outputs_is_read_only_through_items():
    from archc.ir.types import TupleType
    from archc.passes.manager import run
    from tests.passes.test_fuse_add_norm import SPEC as SKIP

    fused = run(archc.loads(SKIP, "skip.arch").graph, ["fuse_add_norm"]).graph
    verify(fused)
    assert str(fused.nodes["norm_1"].type) == "(float[batch, seq, 16], float[batch, seq, 16])"

    def check(edit, match: str, node: str) -> None:
        g = fused.copy()
        edit(g)
        with pytest.raises(VerifyError, match=match) as info:
            verify(g)
        assert info.value.node == node

    def read_directly(g):  # the swiglu reads the tuple instead of its `norm` item
        g.nodes["mlp"] = g.nodes["mlp"].model_copy(update={"inputs": ("norm_1",)})

    def item_of_a_tensor(g):
        g.nodes["norm_1.sum"] = g.nodes["norm_1.sum"].model_copy(update={"inputs": ("attn",)})

    def past_the_end(g):
        g.nodes["norm_1.sum"] = g.nodes["norm_1.sum"].model_copy(update={"params": {"index": 2}})

    def tuple_output(g):
        g.outputs = ["norm_3"]

    def mistyped(g):  # a tuple of the wrong width
        t = g.nodes["norm_1"].type
        g.nodes["norm_1"] = g.nodes["norm_1"].model_copy(update={"type": TupleType(items=t.items[:1])})

    check(read_directly, "only `item` reads a node with several outputs", "mlp")
    check(item_of_a_tensor, "only `item` reads a node with several outputs", "norm_1.sum")
    check(past_the_end, "output 2 of a node with 2 outputs", "norm_1.sum")
    check(tuple_output, "several values", "norm_3")
    check(mistyped, "typed", "norm_1")
