"""Kernelized linear attention and Performer: the state is (S, z) when causal, none otherwise."""

from __future__ import annotations

import pytest

from tests.ops.contract import X, check_contract, ops_of, params, record, state

FAMILY = "linear_attention"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


def test_state_follows_causality():
    kv, z = state("performer_attention", heads=4, features=32)
    assert kv.shape == (4, 32, 16) and z.shape == (4, 32) and kv.dtype == "fp32"
    assert state("linear_attention", heads=4, causal=False) == ()
    assert record("linear_attention").causal(params("linear_attention", heads=4, causal=False), [X]) is False
