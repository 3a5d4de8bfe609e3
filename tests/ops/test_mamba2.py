"""Mamba-2's record: head_dim divides the inner width, groups divide the heads."""

from __future__ import annotations

import pytest

from tests.ops.contract import check_contract, ops_of, shape_error, state

FAMILY = "mamba2"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


def test_divisibility_and_state():
    assert shape_error("mamba2", head_dim=48).arg == "head_dim"
    assert shape_error("mamba2", head_dim=32, groups=3).arg == "groups"
    conv, ssm = state("mamba2", d_state=8, head_dim=32, groups=2)
    assert conv.shape == (128 + 2 * 2 * 8, 4) and ssm.shape == (4, 32, 8)
