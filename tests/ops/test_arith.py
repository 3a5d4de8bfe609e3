"""Arithmetic: both operands of the same type."""

from __future__ import annotations

import pytest

from archc.ir.types import hidden
from tests.ops.contract import X, check_contract, ops_of, params, record, shape_error

FAMILY = "arith"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


def test_operands_must_match():
    assert shape_error("add", [X, hidden("batch", "seq", 32)]).code == "ARC0301"
    assert record("mul").shape(params("mul"), [X, X]) == X
