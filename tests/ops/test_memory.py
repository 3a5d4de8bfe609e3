"""Compressive memory and RMT records: ring buffers, and the body's state sized for one segment."""

from __future__ import annotations

import pytest

import archc
from archc.passes.facts import graph_state
from tests.ops.contract import check_contract, ops_of, state

FAMILY = "memory"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


def test_states():
    names = [s.name for s in state("compressive_memory", heads=4, mem_len=8, cmem_len=4, ratio=2)]
    assert names == ["key", "value", "pending", "compressed_key", "compressed_value"]
    g = archc.loads("""
model t(tokens) {
  block b(x) {
    return x + attention(rmsnorm(x), heads=2, causal=true)
  }
  x = embed(tokens, 64, 16)
  return lm_head(recurrent_memory(x, block=b, memory=3, segment=10))
}""", "t.arch").graph
    mem, key, _ = graph_state(g)
    assert mem.fill == "memory" and mem.shape == (3, 16)
    assert key.name == "rmt.body.attn.key" and key.shape == (2, 16, 8)  # segment + 2·memory slots
