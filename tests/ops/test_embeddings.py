"""Embeddings: token ids in, an even width for sinusoids."""

from __future__ import annotations

import pytest

from archc.ir.types import TensorType, hidden
from tests.ops.contract import X, check_contract, ops_of, params, record, shape_error

FAMILY = "embeddings"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


def test_refusals():
    assert shape_error("embed", [X], vocab=10, d=8).code == "ARC0302"
    assert shape_error("sinusoidal_pos", [hidden("batch", "seq", 7)]).code == "ARC0303"
    ids = TensorType(shape=("batch", "seq"), dtype="int")
    assert record("embed").shape(params("embed", vocab=10, d=8), [ids]) == hidden("batch", "seq", 8)
