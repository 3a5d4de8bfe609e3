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
