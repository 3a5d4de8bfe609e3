"""Longformer, BigBird, Linformer: bidirectional, stateless, their extra projections counted."""

from __future__ import annotations

import pytest

from tests.ops.contract import X, check_contract, cost, ops_of, params, record

FAMILY = "sparse_attention"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_bidirectional_and_stateless(name):
    p = params(name, heads=4, **({"window": 8} if name == "longformer_attention" else {})
               | ({"max_len": 128} if name == "linformer_attention" else {}))
    assert record(name).causal(p, [X]) is False and record(name).state(p, [X]) == ()


def test_longformer_window_is_even_and_linformer_counts_its_projections():
    with pytest.raises(ValueError, match="even"):
        params("longformer_attention", heads=4, window=7)
    base = cost("bigbird_attention", heads=4).params  # q, k, v, o with biases
    assert cost("linformer_attention", heads=4, max_len=128, k=32).params == base + 2 * 128 * 32
