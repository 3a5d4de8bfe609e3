"""Hyena's record: order and encoding checks, the state (the short filter's inputs and each long
convolution's history), and the parameter count of safari's HyenaOperator with its HyenaFilter
(counted by hand from its modules; its shared Sin counted once per layer here)."""

from __future__ import annotations

import pytest

from tests.ops.contract import check_contract, cost, ops_of, shape_error, state

FAMILY = "hyena"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


def test_order_and_encoding_are_checked():
    assert shape_error("hyena", max_len=32, order=1).arg == "order"
    assert shape_error("hyena", max_len=32, emb_dim=4).arg == "emb_dim"


def test_state_and_counts():
    conv, history = state("hyena", max_len=32, order=3, inner=16)
    assert conv.shape == (64, 3) and history.shape[0] == 2 and history.shape[2] == 16  # d = 64, E = 16
    e, f = 16, 8
    # in_proj d→4E, short_filter (4E taps of 3, bias), β [2E], z [32, 3], the MLP 3→f (Sin), 2×(f→f, Sin),
    # f→2E, deltas [2E], out_proj E→d
    want = (64 * 4 * e + 4 * e) + (4 * e * 3 + 4 * e) + 2 * e + 32 * 3 \
        + (3 * f + f + f) + 2 * (f * f + f + f) + f * 2 * e + 2 * e + (e * 64 + 64)
    assert cost("hyena", max_len=32, order=3, inner=16, filter_order=8).params == want
