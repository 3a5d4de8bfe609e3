"""Structured pruning in spec terms: for every prunable op, the pruned spec's module (built from the
rewritten `.arch`, loaded with the sliced weights) equals the original with the pruned units
masked out (their weights zeroed as each op's rule defines, the experts' on the router); the new
spec is formatted and its `archc summary` parameter count is the module's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import archc
from archc.backends.torch import build
from archc.backends.torch.prune import magnitude_sparsify, masked
from archc.backends.torch.prune_spec import PruneOptions, prune_spec
from archc.frontend import loads
from archc.ir.cost import CostCtx
from archc.passes.estimate_cost import estimate_cost

ROOT = Path(__file__).resolve().parents[3]


def _spec(body: str, vocab: int = 300, d: int = 32) -> str:
    return (f"model m(tokens) {{\n  block layer(x) {{\n{body}\n  }}\n  x = embed(tokens, {vocab}, {d})\n"
            "  x = repeat(2, layer)(x)\n  return lm_head(rmsnorm(x), tied=true)\n}\n")


CASES = {
    "gqa+swiglu": (_spec("    x = x + attention(rmsnorm(x), heads=4, kv_heads=2, causal=true, pos=rope())\n"
                         "    return x + swiglu(rmsnorm(x), hidden=64)"), {"heads": 0.5, "ffn": 0.25}),
    "gqa-groups+bias": (_spec("    x = x + attention(rmsnorm(x), heads=4, kv_heads=2, bias=true, causal=true)\n"
                              "    return x + swiglu(rmsnorm(x), hidden=64)"), {"kv_heads": 0.5}),
    "mha+bias+mlp+t5bias": (_spec("    x = x + attention(layernorm(x), heads=4, bias=true, causal=true, "
                                  "pos=relative_bias(buckets=8, max_distance=16))\n"
                                  "    return x + mlp(layernorm(x), hidden=64)"), {"heads": 0.25, "ffn": 0.5}),
    # Qwen3-Next's gated attention: a head's q_proj rows are its queries and its gate
    "gated-attention": (_spec("    x = x + attention(rmsnorm(x), heads=4, kv_heads=2, causal=true, out_gate=true, "
                              "qk_norm=true, pos=rope())\n    return x + swiglu(rmsnorm(x), hidden=64)"), {"heads": 0.5}),
    "gated-attention-groups": (_spec("    x = x + attention(rmsnorm(x), heads=4, kv_heads=2, bias=true, causal=true, "
                                     "out_gate=true)\n    return x + swiglu(rmsnorm(x), hidden=64)"), {"kv_heads": 0.5}),
    "moe": (_spec("    x = x + attention(rmsnorm(x), heads=2, causal=true)\n"
                  "    return x + moe(rmsnorm(x), experts=4, top_k=2, expert=swiglu(hidden=32))"),
            {"experts": 0.25, "ffn": 0.25}),
    "mamba": (_spec("    return x + mamba(rmsnorm(x), d_state=8, expand=2, d_conv=4)"), {"inner": 0.25}),
    "mamba2": (_spec("    return x + mamba2(rmsnorm(x), d_state=8, expand=2, head_dim=16, groups=2, chunk=8)"),
               {"heads": 0.5}),
    "retnet": (_spec("    x = x + retention(layernorm(x), heads=4, value_factor=2, chunk=8)\n"
                     "    return x + swiglu(layernorm(x), hidden=64)"), {"heads": 0.5, "ffn": 0.5}),
    "rwkv4": (_spec("    x = x + rwkv_time_mix(layernorm(x), version=4)\n"
                    "    return x + rwkv_channel_mix(layernorm(x), hidden=64)"), {"inner": 0.25, "ffn": 0.25}),
    "rwkv6": (_spec("    return x + rwkv_time_mix(layernorm(x), version=6, head_size=8, mix_rank=4, decay_rank=6)"),
              {"heads": 0.5}),
    "mlstm": (_spec("    return x + mlstm(layernorm(x), heads=4, expand=2, d_conv=4, qkv_block=4)"), {"heads": 0.5}),
    # the sparse and linear attentions: a head's q/k/v rows (Longformer's global ones too), o columns
    "linear+performer": (_spec("    x = x + linear_attention(rmsnorm(x), heads=4, causal=true, bias=true)\n"
                               "    return x + performer_attention(rmsnorm(x), heads=4, features=16)"), {"heads": 0.5}),
    "longformer+bigbird+linformer": (_spec(
        "    x = x + longformer_attention(layernorm(x), heads=4, window=4, global_tokens=[0], bias=true)\n"
        "    x = x + bigbird_attention(layernorm(x), heads=4, block=4, window_blocks=3, global_blocks=2, "
        "random_blocks=1)\n    return x + linformer_attention(layernorm(x), heads=4, k=8, max_len=32)"), {"heads": 0.5}),
    # key heads, each with its two value heads (Qwen3-Next's per-key-head layout)
    "gated-deltanet": (_spec("    return x + gated_deltanet(rmsnorm(x), heads=4, head_dim=8, v_heads=8, v_head_dim=6, "
                             "chunk=8)"), {"heads": 0.5}),
    # a head's q/k/v/g rows and its decay projection's rows and bias; the low-rank gate shared
    "gla": (_spec("    return x + gla(rmsnorm(x), heads=4, chunk=8)"), {"heads": 0.5}),
    # a head's r/k/v rows, its rows of the three low-rank maps, k_k, k_a, r_k, g_norm; the channel mix's units
    # a head's query rows, its key/value rows of kv_b_proj and o_proj's columns; the latent shared
    "mla": (_spec("    return x + mla(rmsnorm(x), heads=4, kv_lora_rank=8, q_lora_rank=8, qk_nope_head_dim=4, "
                  "qk_rope_head_dim=4, v_head_dim=4)"), {"heads": 0.5}),
    # a channel of every gate and of v, its long filter rows, β and decay rate, out_proj's column
    "hyena": (_spec("    return x + hyena(layernorm(x), max_len=64, order=3, filter_order=8)"), {"inner": 0.5}),
    # a head's q/k/v rows, gate and temperature, o_proj's columns; the memory with them
    "knn": (_spec("    return x + knn_attention(rmsnorm(x), heads=4, topk=4, segment=8)"), {"heads": 0.5}),
    "rwkv7": (_spec("    x = x + rwkv7_time_mix(layernorm(x), head_dim=8, decay_rank=4, a_rank=4, gate_rank=4, chunk=8)\n"
                    "    return x + rwkv7_channel_mix(layernorm(x), hidden=64)"), {"heads": 0.5, "ffn": 0.5}),
}


def _perturbed(text: str, seed: int = 0):
    model = build(loads(text, "m.arch").graph, seed=seed, pipeline="O0")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # off the init (zero biases, ones norms), so every slice matters
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


def _batches(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [(ids, ids) for ids in (torch.randint(0, 300, (2, 24), generator=gen) for _ in range(2))]


@pytest.mark.parametrize("importance", ["magnitude", "taylor"])
@pytest.mark.parametrize("case", list(CASES))
def test_pruned_module_equals_the_masked_original(case, importance, monkeypatch):
    text, ratios = CASES[case]
    if case == "mamba2":  # its gated RMSNorm averages over the pruned width: exact with ε = 0 (see its rule)
        from archc.backends.torch.ops.mamba2 import GatedRMSNorm

        init = GatedRMSNorm.__init__
        monkeypatch.setattr(GatedRMSNorm, "__init__", lambda self, w, g, eps=0.0: init(self, w, g, 0.0))
    model = _perturbed(text)
    res = prune_spec(model, "m.arch", text, PruneOptions(ratios, importance), _batches())
    assert res.params_after < res.params_before
    assert archc.fmt(res.text, "m.arch") == res.text  # an ordinary, formatted spec
    pruned = res.model.eval()
    assert pruned.num_parameters() == res.params_after
    # the cost rules of the new widths (RWKV-6 `hidden`, mLSTM `inner_width`, kv groups) count it too
    assert estimate_cost(loads(res.text, "m.arch").graph, CostCtx()).total.params == res.params_after
    ref = masked(model, res.units)
    ids = torch.randint(0, 300, (2, 19), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(pruned(ids).logits, ref(ids).logits, atol=2e-5, rtol=1e-5)
    kinds = {u.axis.kind for u in res.units}
    assert kinds == set(ratios)
    for u in res.units:
        per = u.axis.units // u.axis.groups
        assert len(u.keep) == u.axis.groups * (per - round(ratios[u.axis.kind] * per))


def test_summary_counts_the_pruned_module(tmp_path):
    text, ratios = CASES["moe"]
    res = prune_spec(_perturbed(text), "m.arch", text, PruneOptions(ratios), None)
    (tmp_path / "p.arch").write_text(res.text)
    assert archc.summary(str(tmp_path / "p.arch")).total.params == res.model.num_parameters()
    assert "experts=3" in res.text and "hidden=24" in res.text  # the nested expert spec edited in place


def test_magnitude_keeps_the_strongest_units_and_retnet_heads_keep_their_decays():
    text, _ = CASES["retnet"]
    model = _perturbed(text)
    with torch.no_grad():  # make head 3 and hidden unit 7 of every layer the strongest
        for i in range(2):
            model.get_parameter(f"layers.{i}.retention.q_proj.weight")[24:32] *= 20
            model.get_parameter(f"layers.{i}.mlp.down_proj.weight")[:, 7] *= 50
    res = prune_spec(model, "m.arch", text, PruneOptions({"heads": 0.75, "ffn": 0.98}), None)
    assert all(u.keep == ([3] if u.axis.kind == "heads" else [7]) for u in res.units)
    assert "decays=[3]" in res.text and "head_dim=8" in res.text


def test_whole_layers_go_by_their_loss_when_skipped():
    text = CASES["gqa+swiglu"][0].replace("repeat(2,", "repeat(3,")
    model = _perturbed(text)
    res = prune_spec(model, "m.arch", text, PruneOptions({}, layers=1), _batches())
    assert "repeat(2, layer)" in res.text and len(res.layers_removed) == 1
    ref = masked(model, [], res.layers_removed)
    ids = torch.randint(0, 300, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(res.model(ids).logits, ref(ids).logits, atol=2e-5, rtol=1e-5)


def test_unstructured_magnitude_is_reported_as_sparsity():
    model = _perturbed(CASES["gqa+swiglu"][0])
    shapes = {k: p.shape for k, p in model.named_parameters()}
    norms = model.get_parameter("layers.0.norm.weight").clone()
    sp = magnitude_sparsify(model, 0.5)
    assert abs(sp.fraction - 0.5) < 0.01 and sp.zeros < sp.model_total
    assert {k: p.shape for k, p in model.named_parameters()} == shapes
    assert torch.equal(model.get_parameter("layers.0.norm.weight"), norms)  # norms are not its business


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archc", *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_prune_writes_a_spec_and_weights_that_train_on(tmp_path):
    text, _ = CASES["gqa+swiglu"]
    spec = tmp_path / "m.arch"
    spec.write_text(text)
    out = _cli("prune", str(spec), "--heads", "0.5", "--ffn", "0.25", "--magnitude", "0.3", "-o", str(tmp_path / "p"))
    assert out.returncode == 0, out.stderr
    assert "archc summary of the new spec" in out.stdout and "magnitude: 30.0%" in out.stdout
    pruned = tmp_path / "p" / "m-pruned.arch"
    run = _cli("train", str(pruned), "--init", str(tmp_path / "p" / "weights.safetensors"), "--distill", str(spec),
               "--task", "chars", "--steps", "3", "--batch", "2", "--seq", "16", "-o", str(tmp_path / "r"), "-q")
    assert run.returncode == 0, run.stderr
    assert "distilling from" in run.stderr and "teacher m is a random init" in run.stderr
    assert (tmp_path / "r" / "last.safetensors").is_file()
    again = _cli("prune", str(spec), "--heads", "0.5", "-o", str(tmp_path / "p"))
    assert again.returncode == 1 and "ARC0903" in again.stderr  # nothing is overwritten without --force


def test_cli_prune_diagnostics(tmp_path):
    alibi = tmp_path / "a.arch"
    alibi.write_text(_spec("    return x + attention(rmsnorm(x), heads=4, causal=true, pos=alibi())"))
    mamba = tmp_path / "m.arch"
    mamba.write_text(CASES["mamba"][0])
    gqa = tmp_path / "g.arch"
    gqa.write_text(CASES["gqa+swiglu"][0])
    cases = [
        ([str(alibi), "--heads", "0.5"], 1, "ARC1202"),
        ([str(gqa), "--heads", "0.5", "--kv-heads", "0.5"], 1, "ARC1202"),
        ([str(mamba), "--heads", "0.25", "--ffn", "0.5"], 1, "ARC1203"),
        ([str(mamba), "--layers", "1"], 1, "ARC1205"),
        ([str(mamba), "--inner", "1.5"], 2, "ARC1307"),
        ([str(mamba)], 2, "ARC1203"),
    ]
    for argv, status, code in cases:
        r = _cli("prune", *argv, "-o", str(tmp_path / "out"))
        assert r.returncode == status and code in r.stderr and "Traceback" not in r.stderr, (argv, r.stderr)
    assert f"{alibi}:3:" in _cli("prune", str(alibi), "--heads", "0.5", "-o", str(tmp_path / "o")).stderr


def test_a_global_ratio_is_spent_where_the_units_matter_least():
    """Two FFN calls of different strength (a hybrid's two blocks): --global removes the weak
    call's units first; the total removed stays the ratio of all units; per op, both lose alike."""
    text = ("model m(tokens) {\n  block a(x) {\n    return x + swiglu(rmsnorm(x), hidden=32)\n  }\n"
            "  block b(x) {\n    return x + swiglu(rmsnorm(x), hidden=32)\n  }\n  x = embed(tokens, 300, 32)\n"
            "  x = pattern(\"AB\", A=a, B=b)(x)\n  return lm_head(rmsnorm(x), tied=true)\n}\n")
    model = _perturbed(text)
    with torch.no_grad():
        model.get_parameter("layers.1.mlp.down_proj.weight").mul_(0.01)  # block b's FFN barely matters
    per_op = prune_spec(model, "m.arch", text, PruneOptions({"ffn": 0.25}), None)
    assert sorted(len(u.keep) for u in per_op.units) == [24, 24]
    glob = prune_spec(model, "m.arch", text, PruneOptions({"ffn": 0.25}, scope="global"), None)
    kept = {u.node: len(u.keep) for u in glob.units}
    assert kept["layers.0.mlp"] > kept["layers.1.mlp"] and sum(kept.values()) == 48
    ref = masked(model, glob.units)
    ids = torch.randint(0, 300, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(glob.model(ids).logits, ref(ids).logits, atol=2e-5, rtol=1e-5)
