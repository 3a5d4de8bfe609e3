"""RWKV time- and channel-mix records: v6 heads divide the width, states per version."""

from __future__ import annotations

import pytest

from tests.ops.contract import check_contract, ops_of, record, shape_error, state

FAMILY = "rwkv"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


def test_states_per_version():
    names = [s.name for s in state("rwkv_time_mix", version=4)]
    assert names == ["shift", "num", "den", "max"] and state("rwkv_time_mix", version=4)[3].fill < -1e30
    assert state("rwkv_time_mix", version=6, head_size=16)[1].shape == (4, 16, 16)
    assert shape_error("rwkv_time_mix", version=6, head_size=48).arg == "head_size"
    assert record("rwkv_channel_mix").role == "ffn" and state("rwkv_channel_mix", hidden=32)[0].shape == (64,)
