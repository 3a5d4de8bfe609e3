"""MoD and ACT records: MoD keeps a routed mask, ACT one body state per ponder step."""

from __future__ import annotations

import pytest

import archc
from archc.passes.facts import graph_state
from tests.ops.contract import check_contract, ops_of, shape_error

FAMILY = "routing"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


SPEC = """
model t(tokens) {{
  block b(x) {{
    return x + attention(rmsnorm(x), heads=2, causal=true)
  }}
  x = embed(tokens, 64, 16)
  return lm_head({wrap})
}}
"""


def test_body_states():
    mod = graph_state(archc.loads(SPEC.format(wrap="mod(x, block=b)"), "t.arch").graph)
    assert [s.name for s in mod] == ["mod.routed", "mod.body.attn.key", "mod.body.attn.value"]
    act = graph_state(archc.loads(SPEC.format(wrap="act(x, block=b, max_steps=3)"), "t.arch").graph)
    assert [s.name for s in act][::2] == ["act.step0.attn.key", "act.step1.attn.key", "act.step2.attn.key"]
    assert shape_error("act", max_steps=65).code == "ARC0305"
