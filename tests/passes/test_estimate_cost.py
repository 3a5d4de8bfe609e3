"""The cost formulas against hand-derived figures and published counts: no torch needed (the
comparisons with transformers' models are in test_estimate_cost_hf.py)."""

from __future__ import annotations

import pytest

import archc


def test_issue_reference_counts():
    assert archc.summary("specs/llama2-7b.arch").total.params == 6_738_415_616
    assert archc.summary("specs/gpt2.arch").total.params == 124_439_808
    assert archc.summary("specs/mamba-130m.arch").total.params == 129_135_360


def test_llama2_kv_cache_and_flops():
    r = archc.summary("specs/llama2-7b.arch", seq=4096, batch=1, dtype="fp16")
    # 2 (k, v) · 32 layers · 4096 positions · 4096 (32 heads · 128) · 2 bytes = 2 GiB
    assert r.total.state_bytes == 2 * 32 * 4096 * 4096 * 2
    # forward FLOPs/token = 2·(non-embedding params) + attention 4·T_eff·d per layer, T_eff = (T+1)/2
    non_embedding = r.total.params - 32000 * 4096
    attn = 32 * 4 * (4096 + 1) / 2 * 4096
    norms_and_adds = r.total.flops - 2 * non_embedding - attn
    assert 0 <= norms_and_adds < 0.001 * r.total.flops
    assert r.chinchilla_tokens == 20 * r.total.params


def test_sliding_window_bounds_the_cache():
    short = archc.summary("specs/mistral-7b.arch", seq=4096).total.state_bytes
    long = archc.summary("specs/mistral-7b.arch", seq=32768).total.state_bytes
    assert short == long == 2 * 32 * 4096 * 8 * 128 * 2


def test_recurrent_state_is_constant_in_context():
    for spec in ("mamba-tiny", "rwkv-tiny", "retnet-tiny", "mamba2-tiny", "xlstm-tiny"):
        a = archc.summary(f"specs/{spec}.arch", seq=128).total
        b = archc.summary(f"specs/{spec}.arch", seq=8192).total
        assert a.state_bytes == b.state_bytes > 0, spec


def test_mamba_state_shapes_match_transformers_cache():
    r = archc.summary("specs/mamba-130m.arch")
    assert r.total.state[0].name == "layers.0.mixer.conv"  # named as the backends name them
    shapes = {(s.name.rsplit(".", 1)[-1], s.shape) for s in r.total.state}
    assert shapes == {("conv", (1536, 4)), ("ssm", (1536, 16))}


def test_moe_counts_all_experts_but_computes_top_k():
    r = archc.summary("specs/mixtral-8x7b.arch", seq=1)
    dense = archc.summary("specs/mistral-7b.arch", seq=1)
    expert = 3 * 4096 * 14336
    assert r.total.params - dense.total.params == 32 * (7 * expert + 4096 * 8)
    # active FLOPs: two experts per token instead of one, plus the router
    assert r.total.flops - dense.total.flops == pytest.approx(32 * (2 * expert + 2 * 4096 * 8), rel=1e-9)


def test_summary_json_has_per_layer_rows():
    r = archc.summary("specs/llama-tiny.arch", seq=4096)
    j = r.to_json(archc.load("specs/llama-tiny.arch").graph)
    assert [layer["name"] for layer in j["layers"]] == ["embed", "layers.0", "layers.1", "layers.2", "layers.3",
                                                         "norm", "lm_head"]
    assert sum(layer["params"] for layer in j["layers"]) == j["total"]["params"] == 3_819_776
