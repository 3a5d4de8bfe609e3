"""Position schemes are components: applying one to a tensor is refused."""

from __future__ import annotations

import pytest

from tests.ops.contract import check_contract, ops_of, record, shape_error

FAMILY = "positions"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_components_only(name):
    assert shape_error(name).code == "ARC0304" and record(name).kind == "component"
