"""Gated DeltaNet's record: grouped value heads, the state as Qwen3-Next's cache."""

from __future__ import annotations

import pytest

from tests.ops.contract import check_contract, cost, ops_of, shape_error, state

FAMILY = "gated_deltanet"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


def test_value_heads_are_a_multiple_of_the_heads():
    assert shape_error("gated_deltanet", heads=2, head_dim=8, v_heads=3).arg == "v_heads"


def test_state_and_counts():
    conv, rec = state("gated_deltanet", heads=2, head_dim=8, v_heads=4, v_head_dim=12)
    assert conv.shape == (2 * 16 + 48, 4) and rec.shape == (4, 8, 12) and rec.dtype == "fp32"
    # in_proj_qkvz + in_proj_ba + conv + dt_bias/A_log + norm + out_proj
    want = 64 * (2 * 16 + 2 * 48) + 64 * 8 + 80 * 4 + 8 + 12 + 48 * 64
    assert cost("gated_deltanet", heads=2, head_dim=8, v_heads=4, v_head_dim=12).params == want
