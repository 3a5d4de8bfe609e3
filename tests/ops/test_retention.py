"""RetNet retention's record."""

from __future__ import annotations

import pytest

from tests.ops.contract import check_contract, ops_of, shape_error, state

FAMILY = "retention"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


def test_heads_divide_and_state():
    assert shape_error("retention", heads=3).arg == "heads"
    assert state("retention", heads=4)[0].shape == (4, 16, 32)
