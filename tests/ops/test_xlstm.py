"""sLSTM / mLSTM records: head divisibility, the stabilizer's initial value, the optional conv."""

from __future__ import annotations

import pytest

from tests.ops.contract import check_contract, ops_of, shape_error, state

FAMILY = "xlstm"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


def test_states():
    assert [s.name for s in state("slstm", heads=4, d_conv=0)] == ["h", "c", "n", "m"]
    assert state("slstm", heads=4)[-1].shape == (64, 4)
    c, n, m, conv = state("mlstm", heads=4)
    assert n.shape == (4, 32)
    assert c.shape == (4, 32, 32) and m.fill < -1e30 and conv.shape == (128, 4)
    assert shape_error("mlstm", heads=3).arg == "heads"
