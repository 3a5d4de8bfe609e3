"""LSTM / GRU records: the output width doubles when bidirectional, which has no state."""

from __future__ import annotations

import pytest

from tests.ops.contract import X, check_contract, ops_of, params, record, state

FAMILY = "recurrent"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


def test_bidirectional_width_and_state():
    assert record("lstm").shape(params("lstm", hidden=32, bidirectional=True), [X]).width == 64
    assert state("lstm", hidden=32, bidirectional=True) == ()
    assert [s.name for s in state("lstm", hidden=32, layers=2)] == ["h", "c"]
    assert state("gru", hidden=32, layers=2)[0].shape == (2, 32)
