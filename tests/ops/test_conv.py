"""Gated convolution's record: a window of k − 1 inputs, none for k = 1."""

from __future__ import annotations

import pytest

from tests.ops.contract import check_contract, ops_of, state

FAMILY = "conv"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


def test_state():
    assert state("gated_conv", kernel=4)[0].shape == (64, 3)
    assert state("gated_conv", kernel=1) == ()
