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


def test_a_per_token_gate_broadcasts_over_the_width():
    gate = hidden("batch", "seq", 1)
    assert record("mul").shape(params("mul"), [gate, X]) == X
    assert record("mul").shape(params("mul"), [X, gate]) == X
    assert shape_error("mul", [hidden("batch", "seq", 2), X]).code == "ARC0301"
    assert shape_error("add", [gate, X]).code == "ARC0301"  # a sum does not broadcast


def test_scale_keeps_the_type():
    assert record("scale").shape(params("scale", by=0.5), [X]) == X
