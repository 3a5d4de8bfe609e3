"""ARMT's associative memory record: φ's width (2·key_dim·ν), the memory and its pending write as
state, the parameter count of ARMT's AssociativeLayerWrapper projections."""

from __future__ import annotations

import pytest

from tests.ops.contract import check_contract, cost, ops_of, state

FAMILY = "associative"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


def test_state_and_counts():
    memory, norm, pending, pending_norm = state("associative_memory", key_dim=8, nu=3)
    assert memory.shape == pending.shape == (48, 64) and norm.shape == pending_norm.shape == (48,)  # 2·8·3 features
    assert cost("associative_memory", key_dim=8).params == 2 * 64 * 8 + 64 * 64 + 64 + 1
