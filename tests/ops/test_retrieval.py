"""The kNN memory's record: the memory as per-token key/value state, parameter counts, heads."""

from __future__ import annotations

import pytest

from tests.ops.contract import check_contract, cost, ops_of, shape_error, state

FAMILY = "retrieval"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


def test_heads_must_split_the_width():
    assert shape_error("knn_attention", heads=3).arg == "heads"


def test_state_and_counts():
    key, value = state("knn_attention", heads=4)
    assert (key.name, key.shape[0], key.shape[2], key.kv) == ("key", 4, 16, True) and value.kv
    assert cost("knn_attention", heads=4).params == 4 * 64 * 64 + 4 + 4  # q, k, v, o; gate; log_scale
    assert cost("knn_attention", heads=2, head_dim=8).params == 4 * 64 * 16 + 2 + 2
