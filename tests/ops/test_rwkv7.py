"""RWKV-7's records: widths, default ranks (flash-linear-attention's formulas), the state, and the
parameter counts of flash-linear-attention's RWKV7Attention (without v_lora) and RWKV7FeedForward,
counted by hand from their modules."""

from __future__ import annotations

import pytest

from tests.ops.contract import check_contract, cost, ops_of, shape_error, state

FAMILY = "rwkv7"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


def test_width_must_split_into_heads():
    assert shape_error("rwkv7_time_mix", head_dim=24).arg == "head_dim"


def test_state_and_counts():
    shift, rec = state("rwkv7_time_mix", head_dim=16)
    assert shift.shape == (64,) and rec.shape == (4, 16, 16) and rec.dtype == "fp32"  # d = 64
    # x_{r,w,k,v,a,g}, k_k, k_a, r_k; r/k/v/o; w_lora (32, bias), a_lora (32, bias), g_lora (32, no bias); g_norm
    want = 6 * 64 + 3 * 64 + 4 * 64 * 64 + (64 * 32 + 32 * 64 + 64) * 2 + 64 * 32 + 32 * 64 + 2 * 64
    assert cost("rwkv7_time_mix", head_dim=16).params == want
    assert cost("rwkv7_channel_mix", hidden=256).params == 64 + 2 * 64 * 256


def test_default_ranks_follow_flash_linear_attention():
    from archc.ops.rwkv7 import TimeMix7Params

    assert TimeMix7Params().ranks(2048) == (96, 96, 256)  # RWKV-7 1.5B: w, a 96; g 256
    assert TimeMix7Params().ranks(768) == (64, 64, 128)   # 0.1B: 64, 64, 128
