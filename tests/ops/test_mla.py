"""MLA's record: the compressed cache as declared state, and the parameter count of transformers'
DeepseekV3Attention (counted by hand from its modules), with and without the query rank."""

from __future__ import annotations

import pytest

from tests.ops.contract import check_contract, cost, ops_of, shape_error, state

FAMILY = "mla"
P = dict(heads=2, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6)


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


def test_rope_width_must_be_even():
    assert shape_error("mla", **{**P, "qk_rope_head_dim": 3}).arg == "qk_rope_head_dim"


def test_the_cache_is_the_latent_and_the_shared_rotary_key():
    latent, rope = state("mla", **P)
    assert (latent.name, latent.shape[1:], latent.kv) == ("kv_latent", (16,), True)
    assert (rope.name, rope.shape[1:], rope.kv) == ("key_rope", (4,), True)


def test_counts():
    d, kv_a, kv_b, o = 64, 64 * (16 + 4) + 16, 16 * 2 * (8 + 6), 2 * 6 * 64
    assert cost("mla", **P).params == d * 2 * 12 + kv_a + kv_b + o  # q_proj d→H·(d_C + d_R)
    q = 64 * 24 + 24 + 24 * 2 * 12  # q_a_proj, q_a_layernorm, q_b_proj
    assert cost("mla", **P, q_lora_rank=24).params == q + kv_a + kv_b + o
    assert cost("mla", **P, q_lora_rank=24, bias=True).params == q + kv_a + kv_b + o + 24 + 20 + 64
