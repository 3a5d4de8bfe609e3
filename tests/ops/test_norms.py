"""Norms: groups divide the width; a bias-free LayerNorm counts no shift."""

from __future__ import annotations

import pytest

from tests.ops.contract import check_contract, cost, ops_of, shape_error

FAMILY = "norms"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


def test_groups_and_counts():
    assert shape_error("groupnorm", groups=5).arg == "groups"
    assert cost("layernorm", bias=False).params == 64 and cost("layernorm").params == 128
