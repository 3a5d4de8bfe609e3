"""Graph inputs are an ordinary op: their type comes from their parameters."""

from __future__ import annotations

import pytest

from archc.ir.types import hidden
from tests.ops.contract import check_contract, ops_of, params, record

FAMILY = "inputs"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


def test_type_from_params():
    t = record("input").shape(params("input", dtype="float", shape=("batch", "seq", 8)), [])
    assert t == hidden("batch", "seq", 8) and record("input").kind == "input"
