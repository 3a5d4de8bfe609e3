"""MoE's record: top_k ≤ experts, the expert keeps the width, every expert counted."""

from __future__ import annotations

import pytest

from tests.ops.contract import check_contract, cost, ops_of, params, shape_error

FAMILY = "moe"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


EXPERT = {"op": "swiglu", "params": {"hidden": 32}}


def test_refusals_and_counts():
    with pytest.raises(ValueError, match="top_k"):
        params("moe", experts=2, top_k=3, expert=EXPERT)
    assert shape_error("moe", experts=4, expert={"op": "linear", "params": {"out": 8}}).arg == "expert"
    c = cost("moe", experts=4, top_k=2, expert=EXPERT)
    assert c.params == 64 * 4 + 4 * 3 * 64 * 32
