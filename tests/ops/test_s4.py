"""S4 / S4D's record: even state size, DPLR needs bilinear, bidirectional means no state."""

from __future__ import annotations

import pytest

from tests.ops.contract import X, check_contract, ops_of, params, record, shape_error, state

FAMILY = "s4"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


def test_refusals_and_state():
    assert shape_error("s4", d_state=5).code == "ARC0303"
    e = shape_error("s4", mode="dplr", discretization="zoh")
    assert (e.code, e.arg) == ("ARC0305", "discretization")
    assert state("s4", d_state=8)[0].shape == (64, 8)
    assert state("s4", bidirectional=True) == ()
    assert record("s4").causal(params("s4", bidirectional=True), [X]) is False
