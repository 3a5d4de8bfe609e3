"""Softmax and latent attention: shape errors at the argument, causality, the KV cache declared."""

from __future__ import annotations

import pytest

from archc.ir.cost import MAX_LEN
from archc.ir.types import hidden
from tests.ops.contract import X, check_contract, ops_of, params, record, shape_error, state

FAMILY = "attention"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


def test_heads_must_divide_the_width_and_kv_heads_the_heads():
    e = shape_error("attention", heads=5)
    assert (e.code, e.arg) == ("ARC0303", "heads")
    assert shape_error("attention", heads=4, kv_heads=3).arg == "kv_heads"
    assert shape_error("attention", heads=4, head_dim=6, pos={"op": "rope", "params": {"fraction": 0.5}}).arg == "pos"


def test_cross_attention_is_stateless_and_not_causal():
    p = params("attention", heads=4)
    assert record("attention").causal(p, [X, X]) is None
    assert state("attention", [X, X], heads=4) == ()
    assert shape_error("attention", [X, X], heads=4, causal=True).arg == "causal"


def test_kv_cache_is_declared_with_a_window_cap():
    key, value = state("attention", heads=4, kv_heads=2, window=16)
    assert value.shape == key.shape
    assert key.shape == (2, MAX_LEN, 16) and key.dtype == "model" and key.sizes(100) == (2, 16, 16)
    assert state("attention", heads=4)[0].sizes(100) == (4, 100, 16)


def test_latent_attention_moves_to_a_new_axis():
    assert record("latent_attention").shape(params("latent_attention", latents=8), [X]) == hidden("batch", 8, 64)
    assert record("latent_attention").causal(params("latent_attention", latents=8), [X]) is False


def test_q_k_norms_over_the_width_refuse_head_pruning():
    """OLMo 2's norms average over every head's channels: removing a head would rescale the rest."""
    from archc.ops.registry import REGISTRY, CannotPrune

    op = REGISTRY["attention"]
    p = op.params(heads=4, kv_heads=2, causal=True, qk_norm=True, qk_norm_width=True)
    with pytest.raises(CannotPrune, match="rescale"):
        op.prune(p, [hidden("batch", "seq", 64)])
