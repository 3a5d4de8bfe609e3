"""GLA's record: widths from the expansions, the state, and the parameter count of
flash-linear-attention's GatedLinearAttention layer (counted by hand from its modules)."""

from __future__ import annotations

import pytest

from tests.ops.contract import check_contract, cost, ops_of, shape_error, state

FAMILY = "gla"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


def test_widths_must_split_into_heads():
    assert shape_error("gla", heads=3).arg == "heads"
    assert shape_error("gla", heads=2, expand_k=0.3).arg == "expand_k"


def test_state_and_counts():
    (rec,) = state("gla", heads=2)
    assert rec.shape == (2, 16, 32) and rec.dtype == "fp32"  # d = 64: K = 64·0.5/2, V = 64/2
    # q, k (d→32), v, g (d→64), gk_proj (d→16→32, with bias), the norm's [V], o_proj
    want = 2 * 64 * 32 + 2 * 64 * 64 + 64 * 16 + 16 * 32 + 32 + 32 + 64 * 64
    assert cost("gla", heads=2).params == want
