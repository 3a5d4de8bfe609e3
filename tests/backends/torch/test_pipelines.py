"""Builds at O0, O1 and O2 compute the same function from the same weights (logits, decode steps,
gradients: fp32, 1e-5), and checkpoints round-trip between fused and unfused builds in both
layouts (docs/passes.md)."""

from __future__ import annotations

import pytest
import torch

import archc
from archc.backends.torch import optimize
from archc.backends.torch.checkpoint import load_weights, save_weights
from archc.backends.torch.module import canonical_layout
from archc.passes.rewrite import fusion_report
from tests.passes.test_fuse_add_norm import SPEC as SKIP
from tests.passes.test_fuse_bias_act import SPEC as BIAS_ACT
from tests.passes.test_pack_gate_up import SPEC
from tests.passes.test_pack_in_proj import SPEC as IN_PROJ
from tests.passes.test_pack_qkv import SPEC as QKV


@pytest.fixture(scope="module")
def graph():
    return archc.loads(SPEC, "packed.arch").graph


#: One spec per fusion pass: gated FFNs, packed q/k/v (GQA with biases and RoPE, a sliding window,
#: cross-attention left alone), residual adds into rmsnorm and layernorm (and one left unfused),
#: a recurrent mixer's input projections (retention; Gated DeltaNet, RWKV and Mamba-2 beside it),
#: linears into their activations.
FUSION_SPECS = {"gate_up": (SPEC, 64), "qkv": (QKV, 64), "add_norm": (SKIP, 64), "in_proj": (IN_PROJ, 64),
                "bias_act": (BIAS_ACT, 64)}


@pytest.mark.parametrize("level", ["O1", "O2"])
@pytest.mark.parametrize("name", sorted(FUSION_SPECS))
def test_fused_builds_equal_the_unfused_one(name, level):
    text, vocab = FUSION_SPECS[name]
    g = archc.loads(text, f"{name}.arch").graph
    base, fused = archc.build(g, seed=0, pipeline="O0"), archc.build(g, seed=0, pipeline=level)
    assert fused.pipeline == level and base.pipeline == "O0"
    assert fusion_report(fused.graph)[0], "the spec is there to be fused"
    assert base.state_dict().keys() == fused.state_dict().keys()
    assert all(torch.equal(v, fused.state_dict()[k]) for k, v in base.state_dict().items())
    ids = torch.randint(0, vocab, (2, 11))
    out_a, out_b = base(ids, labels=ids), fused(ids, labels=ids)
    torch.testing.assert_close(out_b.logits, out_a.logits, rtol=1e-5, atol=1e-5)
    out_a.loss.backward()
    out_b.loss.backward()
    want = {k: p.grad for k, p in base.named_parameters()}
    got = canonical_layout(fused, {k: p.grad for k, p in fused.named_parameters()})
    assert got.keys() == want.keys()
    for k in want:  # a packed weight's gradient is its parts' gradients, stacked
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)
    state_a, state_b = base.init_state(2, 16), fused.init_state(2, 16)
    step_a, state_a = base.step(ids[:, :5], 0, state_a)
    step_b, state_b = fused.step(ids[:, :5], 0, state_b)
    for t in range(5, 8):
        step_a, state_a = base.step(ids[:, t:t + 1], t, state_a)
        step_b, state_b = fused.step(ids[:, t:t + 1], t, state_b)
        torch.testing.assert_close(step_b, step_a, rtol=1e-5, atol=1e-5)


def test_optimize_moves_a_model_between_levels_with_its_weights(graph):
    fused = archc.build(graph, seed=5, pipeline="O2")
    plain = optimize(fused, "O0")
    assert plain.pipeline == "O0" and type(plain.get_submodule("mlp")).__name__ == "GLU"
    assert optimize(plain, "O1").canonical_graph is graph
    ids = torch.randint(0, 64, (1, 9))
    torch.testing.assert_close(plain(ids).logits, fused(ids).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["canonical", "fused"])
def test_checkpoints_load_across_pipelines(graph, tmp_path, layout):
    fused = archc.build(graph, seed=3, pipeline="O1")
    save_weights(fused, tmp_path / "w.safetensors", layout=layout)
    plain, refused = archc.build(graph, seed=9, pipeline="O0"), archc.build(graph, seed=9, pipeline="O1")
    meta = load_weights(plain, tmp_path / "w.safetensors")
    load_weights(refused, tmp_path / "w.safetensors")
    assert meta["pipeline"] == "O1" and ("packs" in meta) == (layout == "fused")
    ids = torch.randint(0, 64, (1, 7))
    torch.testing.assert_close(plain(ids).logits, fused(ids).logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(refused(ids).logits, fused(ids).logits, rtol=1e-5, atol=1e-5)


def test_an_unknown_level_is_refused(graph):
    with pytest.raises(ValueError, match="unknown pipeline `O3`"):
        archc.build(graph, pipeline="O3")


@pytest.mark.parametrize(("node", "hf"), [("mlp", "llama"), ("mlp_1", "gemma")])
def test_packed_glu_equals_transformers_mlp(graph, node, hf):
    """The packed module against transformers' own MLPs (random-initialized from a config):
    LlamaMLP (SiLU) for `swiglu_packed`, GemmaMLP (GELU-tanh) for `geglu_packed`. The reference's
    weights load into the packed module, under their own names, through its load hook."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if hf == "llama":
        ref = transformers.models.llama.modeling_llama.LlamaMLP(transformers.LlamaConfig(
            hidden_size=16, intermediate_size=24, hidden_act="silu", num_attention_heads=2, num_key_value_heads=2))
    else:
        ref = transformers.models.gemma.modeling_gemma.GemmaMLP(transformers.GemmaConfig(
            hidden_size=16, intermediate_size=24, hidden_activation="gelu_pytorch_tanh", num_attention_heads=2,
            num_key_value_heads=2, head_dim=8))
    fused = archc.build(graph, seed=0, pipeline="O1").get_submodule(node)
    state = dict(ref.state_dict())
    if hf == "gemma":  # GemmaMLP has no biases; the spec's geglu has them: zero
        state.update({"gate_proj.bias": torch.zeros(24), "up_proj.bias": torch.zeros(24),
                      "down_proj.bias": torch.zeros(16)})
    fused.load_state_dict(state)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(fused(x), ref(x), rtol=1e-5, atol=1e-6)
