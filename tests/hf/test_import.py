"""`archc import-hf` against transformers: random-initialized models of each imported family are
saved with `save_pretrained` (nothing downloaded), imported, and compared with transformers' own
forward (fp64, 1e-6; fp32, 1e-4 where transformers' model does not run in fp64), greedy decoding through
archc's cache (32 tokens, teacher-forced, compared where the top two logits are apart), and parameter counts;
fields archc cannot express are refused by name."""

from __future__ import annotations

import json

import pytest
import torch

import archc
from archc.backends.torch.checkpoint import load_weights
from archc.hf import HFImportError, import_hf
from archc.ir.cost import CostCtx
from archc.passes.estimate_cost import estimate_cost

transformers = pytest.importorskip("transformers")

SMALL = dict(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=96, rms_norm_eps=1e-6)

#: family → (config class, model class, settings beyond SMALL)
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {"rope_parameters": {"rope_type": "linear", "factor": 2.0,
                                                                      "rope_theta": 5000.0}}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": 8, "tie_word_embeddings": True}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"tie_word_embeddings": True}),
    "mamba": ("MambaConfig", "MambaForCausalLM", {"state_size": 8, "time_step_rank": 3, "use_bias": True}),
    "falcon_mamba": ("FalconMambaConfig", "FalconMambaForCausalLM", {"state_size": 8, "mixer_rms_eps": 1e-5}),
    "mamba2": ("Mamba2Config", "Mamba2ForCausalLM", {"state_size": 8, "head_dim": 16, "num_heads": 8, "n_groups": 2,
                                                     "chunk_size": 8, "layer_norm_epsilon": 1e-5}),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", {"num_local_experts": 4, "num_experts_per_tok": 2,
                                                        "router_aux_loss_coef": 0.02}),
    "olmo": ("OlmoConfig", "OlmoForCausalLM", {"eos_token_id": None, "pad_token_id": None}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {"pad_token_id": None, "bos_token_id": None, "eos_token_id": None,
                                               "sliding_window": 8, "rope_parameters": {
                                                   "rope_type": "default", "rope_theta": 10000.0,
                                                   "partial_rotary_factor": 0.5}}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 32, "attention_bias": True, "rms_norm_eps": 1e-5}),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 64}),
    # a MoE layer (its shared expert gated per token) and a dense one (`mlp_only_layers`)
    "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM", {
        "moe_intermediate_size": 32, "shared_expert_intermediate_size": 48, "num_experts": 4,
        "num_experts_per_tok": 2, "mlp_only_layers": [1]}),
    "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM", {
        "moe_intermediate_size": 32, "num_experts": 4, "num_experts_per_tok": 2, "norm_topk_prob": True,
        "head_dim": 32}),
    "granite": ("GraniteConfig", "GraniteForCausalLM", {
        "embedding_multiplier": 12.0, "residual_multiplier": 0.22, "attention_multiplier": 0.0625,
        "logits_scaling": 8.0}),
    # q, k, v interleaved per head in `query_key_value`, a quarter of each head rotated, parallel
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", {"pad_token_id": None, "eos_token_id": None,
                                                         "bos_token_id": None}),
    # GQA with q/k/v biases, sequential residual
    "stablelm": ("StableLmConfig", "StableLmForCausalLM", {"use_qkv_bias": True, "layer_norm_eps": 1e-5}),
    # a Mamba layer with an MLP, one with experts, attention with experts: Δ/B/C norms with weights
    "jamba": ("JambaConfig", "JambaForCausalLM", {
        "attn_layer_period": 4, "attn_layer_offset": 1, "expert_layer_period": 2, "expert_layer_offset": 1,
        "num_hidden_layers": 4, "num_experts": 4, "num_experts_per_tok": 2, "mamba_d_state": 8, "mamba_dt_rank": 3,
        "use_mamba_kernels": False}),
    # Mamba-2 with 2 groups, then attention with half-rotary heads
    "bamba": ("BambaConfig", "BambaForCausalLM", {
        "attn_layer_indices": [1], "mamba_n_heads": 8, "mamba_d_head": 16, "mamba_n_groups": 2, "mamba_d_state": 8,
        "mamba_chunk_size": 8, "rms_norm_eps": 1e-5}),
    # Gated DeltaNet with 2 value heads per key head, then gated attention; MoE with a shared expert
    "qwen3_next": ("Qwen3NextConfig", "Qwen3NextForCausalLM", {
        "layer_types": ["linear_attention", "full_attention"], "head_dim": 16, "linear_num_key_heads": 2,
        "linear_key_head_dim": 16, "linear_num_value_heads": 4, "linear_value_head_dim": 16,
        "moe_intermediate_size": 32, "shared_expert_intermediate_size": 48, "num_experts": 4,
        "num_experts_per_tok": 2}),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", {"pad_token_id": None, "eos_token_id": None}),
    # RWKV-4 (its default rescale_every of 6 halves nothing in two layers: see `rwkv_family`)
    "rwkv": ("RwkvConfig", "RwkvForCausalLM", {"bos_token_id": None, "eos_token_id": None}),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {"head_dim": 16}),
    # caps small enough to bend the scores and logits; a sliding layer and a full one
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {
        "head_dim": 16, "sliding_window": 8, "query_pre_attn_scalar": 24, "attn_logit_softcapping": 0.5,
        "final_logit_softcapping": 0.3}),
    # the sliding layer's rope of its own, the full layer's linearly scaled
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM", {
        "head_dim": 16, "sliding_window": 8, "query_pre_attn_scalar": 24,
        "layer_types": ["sliding_attention", "full_attention"], "rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000000.0}}}),
}
#: families whose transformers reference does not run in fp64 (Mixtral's experts use grouped_mm,
#: fp32 and below): compared in fp32 within 1e-4, as the issue allows
FP32_REFERENCE = {"mixtral", "qwen2_moe", "qwen3_moe", "jamba", "qwen3_next"}
#: families with SSM layers (archc's SSM steps keep their state in fp32: decoding compared in fp32)
SSM = {"mamba", "mamba2", "falcon_mamba", "jamba", "bamba", "qwen3_next", "rwkv"}
#: the Llama family's widths; the Mamba family's configs take theirs from `hidden_size` and `expand`
LLAMA_ONLY = ("num_attention_heads", "num_key_value_heads", "intermediate_size", "rms_norm_eps")


def _save(tmp_path, family: str, **extra):
    cfg_cls, model_cls, settings = FAMILIES[family]
    unused = LLAMA_ONLY if "mamba" in family else ("num_attention_heads", "num_key_value_heads", "rms_norm_eps") \
        if family == "rwkv" else ("rms_norm_eps",) if family in ("olmo", "stablelm") else \
        ("rms_norm_eps", "num_key_value_heads") if family == "gpt_neox" else ()
    small = {k: v for k, v in SMALL.items() if k not in unused} if family != "gpt2" else {"vocab_size": 128}
    cfg = getattr(transformers, cfg_cls)(**{**small, **settings, **extra})
    torch.manual_seed(0)
    hf = getattr(transformers, model_cls)(cfg).eval()
    with torch.no_grad():  # 1-D parameters (D, Δ biases, norm scales) off their constant inits
        for p in hf.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.2)
    hf.generation_config.eos_token_id = None  # generate exactly the tokens asked for
    hf.save_pretrained(tmp_path)
    return hf


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_an_imported_model_computes_what_transformers_does(tmp_path, family):
    dtype, tol = (torch.float32, 1e-4) if family in FP32_REFERENCE else (torch.float64, 1e-6)
    hf = _save(tmp_path / "hf", family).to(dtype)
    archc.import_hf(str(tmp_path / "hf"), str(tmp_path / "m.arch"), str(tmp_path / "m.safetensors"))
    graph = archc.load(str(tmp_path / "m.arch")).graph
    # the exact parameter count (a tied head counts once, as transformers' num_parameters)
    assert estimate_cost(graph, CostCtx()).total.params == hf.num_parameters()
    model = archc.build(graph).to(dtype).eval()
    load_weights(model, tmp_path / "m.safetensors")
    ids = torch.randint(0, 128, (2, 21))  # past mistral's window of 8
    with torch.no_grad():
        # (transformers' Mamba returns its fp64 logits cast to fp32)
        torch.testing.assert_close(model(ids).logits, hf(ids).logits.to(dtype), atol=tol, rtol=tol)
        # decoding through archc's cache predicts transformers' greedy tokens: fed `generate`'s
        # tokens one at a time (teacher-forced, so one near-tie cannot derail the rest), archc's
        # argmax equals transformers' wherever transformers' top two logits are further apart than
        # the rounding of the dtype (fp32 for the SSMs: archc's SSM steps keep their state in fp32
        # and do not run in an fp64 model)
        if family in SSM:
            hf, model = hf.float(), model.float()
        prompt = ids[:1, :5]
        want = hf.generate(prompt, max_new_tokens=32, do_sample=False, min_new_tokens=32, pad_token_id=0)[0]
        top = hf(want[None]).logits[0, 4:-1].topk(2, dim=-1).values
        clear = (top[:, 0] - top[:, 1] > (1e-3 if hf.dtype == torch.float32 else 1e-9)).tolist()
        state = model.init_state(1, 64)
        logits, state = model.step(prompt, 0, state)
        got = [int(logits[0, -1].argmax())]
        for t in range(31):
            logits, state = model.step(want[5 + t].view(1, 1), 5 + t, state)
            got.append(int(logits[0, -1].argmax()))
    assert sum(clear) >= 24, "too many near-ties to test decoding"
    assert [g for g, c in zip(got, clear, strict=True) if c] == [w for w, c in zip(want[5:].tolist(), clear,
                                                                                   strict=True) if c]


@pytest.mark.parametrize("rope", [
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0},
    {"rope_type": "yarn", "factor": 4.0},
    {"rope_type": "yarn", "factor": 8.0, "beta_fast": 8.0, "beta_slow": 2.0, "mscale": 1.0, "mscale_all_dim": 0.5},
    {"rope_type": "yarn", "factor": 4.0, "attention_factor": 1.5, "truncate": False},
], ids=["llama3", "yarn", "yarn-deepseek-mscale", "yarn-attention-factor"])
def test_rope_scaling_computes_what_transformers_does(tmp_path, rope):
    """Llama 3.1's per-frequency scaling and YaRN's ramp and temperature, with an original context
    short enough (16) that the head's frequencies fall in every band, compared past that context
    (fp64), and exported back to the same config."""
    rope = {**rope, "original_max_position_embeddings": 16, "rope_theta": 10000.0}
    hf = _save(tmp_path / "hf", "llama", rope_parameters=rope).double()
    archc.import_hf(str(tmp_path / "hf"), str(tmp_path / "m.arch"), str(tmp_path / "m.safetensors"))
    assert f'scaling="{rope["rope_type"]}"' in (tmp_path / "m.arch").read_text()
    model = archc.build(str(tmp_path / "m.arch")).double().eval()
    load_weights(model, tmp_path / "m.safetensors")
    ids = torch.randint(0, 128, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, hf(ids).logits, atol=1e-6, rtol=1e-6)
    from archc.hf.exporter import export_hf

    text = (tmp_path / "m.arch").read_text()
    assert export_hf(model, text, "m.arch", tmp_path / "out").model_type == "llama"
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").double().eval()
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, hf(ids).logits, atol=1e-6, rtol=1e-6)


def test_the_spec_reads_like_a_hand_written_one(tmp_path):
    _save(tmp_path, "qwen2")
    spec = import_hf(tmp_path).spec
    assert "kv_heads = 2" in spec and "repeat(layers, decoder)" in spec and "bias=true" in spec
    assert archc.fmt(spec, "q.arch") == spec  # already in canonical form


@pytest.mark.parametrize(("change", "field"), [
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"rope_parameters": {"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0] * 8,
                          "long_factor": [2.0] * 8, "original_max_position_embeddings": 512}}, "rope_parameters"),
    ({"rope_parameters": {"rope_type": "dynamic", "factor": 4.0, "rope_theta": 10000.0}}, "rope_parameters"),
    ({"model_type": "falcon"}, "model_type"),
    # malformed rope sets: a diagnostic naming the field, never an internal error
    ({"rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0}}, "rope_parameters"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": "4", "rope_theta": 10000.0,
                          "original_max_position_embeddings": 16}}, "rope_parameters"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0, "truncate": "no",
                          "original_max_position_embeddings": 16}}, "rope_parameters"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": None, "rope_theta": 10000.0,
                          "original_max_position_embeddings": 0}}, "rope_parameters"),
    ({"attn_logit_softcapping": 50.0}, "attn_logit_softcapping"),
])
def test_what_archc_cannot_express_is_refused_by_name(tmp_path, change, field):
    _save(tmp_path, "llama")
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(HFImportError) as e:
        import_hf(tmp_path)
    assert e.value.field == field and field in str(e.value)


def test_weights_the_config_does_not_describe_are_refused(tmp_path):
    _save(tmp_path, "llama")
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 80}))
    with pytest.raises(HFImportError, match=r"mlp.gate_proj.weight` gives \[96, 64\], archc's .* is \[80, 64\]"):
        import_hf(tmp_path)


def test_pickled_checkpoints_are_refused_not_unpickled(tmp_path):
    _save(tmp_path, "llama")
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(HFImportError, match="never unpickles"):
        import_hf(tmp_path)


def test_sharded_checkpoints_are_read_shard_by_shard(tmp_path):
    hf = _save(tmp_path / "hf", "llama")
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    archc.import_hf(str(tmp_path / "sharded"), None, str(tmp_path / "w.safetensors"))
    archc.import_hf(str(tmp_path / "hf"), None, str(tmp_path / "w1.safetensors"))
    _assert_same_weights(tmp_path / "w.safetensors", tmp_path / "w1.safetensors")


def _assert_same_weights(a, b) -> None:
    from safetensors.torch import load_file

    a, b = load_file(a), load_file(b)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_command_writes_a_spec_and_weights_that_check_and_load(tmp_path, capsys):
    from archc.cli import main

    _save(tmp_path / "hf", "qwen2")
    out, w = tmp_path / "q.arch", tmp_path / "q.safetensors"
    assert main(["import-hf", str(tmp_path / "hf"), "-o", str(out), "--weights", str(w)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["check", str(out)]) == 0 and main(["summary", str(out)]) == 0
    load_weights(archc.build(str(out)), w)
    # nothing a user wrote is overwritten without asking
    before = out.read_text()
    assert main(["import-hf", str(tmp_path / "hf"), "-o", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err and out.read_text() == before
    # a config archc cannot express: a diagnostic with its code, no traceback, nothing written
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**cfg, "hidden_act": "relu"}))
    assert main(["import-hf", str(tmp_path / "hf"), "-o", str(tmp_path / "x.arch")]) == 1
    err = capsys.readouterr().err
    assert "ARC1401" in err and "`hidden_act` is 'relu'" in err and "Traceback" not in err
    assert not (tmp_path / "x.arch").exists()


def test_mixtral_reads_the_per_expert_layout_of_older_checkpoints(tmp_path):
    """Published Mixtral checkpoints store `block_sparse_moe.experts.{e}.w1/w3/w2` (transformers 5
    stacks them on load): the same archc weights come from either layout."""
    from safetensors.torch import load_file, save_file

    _save(tmp_path / "new", "mixtral")
    sd = load_file(tmp_path / "new" / "model.safetensors")
    old = {}
    for k, v in sd.items():
        if k.endswith("mlp.gate.weight"):
            old[k.replace("mlp.gate", "block_sparse_moe.gate")] = v
        elif k.endswith("experts.gate_up_proj"):
            p, f = k.replace("mlp.experts.gate_up_proj", "block_sparse_moe.experts."), v.shape[1] // 2
            for e in range(v.shape[0]):
                old[f"{p}{e}.w1.weight"], old[f"{p}{e}.w3.weight"] = v[e, :f].clone(), v[e, f:].clone()
        elif k.endswith("experts.down_proj"):
            p = k.replace("mlp.experts.down_proj", "block_sparse_moe.experts.")
            for e in range(v.shape[0]):
                old[f"{p}{e}.w2.weight"] = v[e].clone()
        else:
            old[k] = v
    (tmp_path / "old").mkdir()
    save_file(old, tmp_path / "old" / "model.safetensors")
    (tmp_path / "old" / "config.json").write_text((tmp_path / "new" / "config.json").read_text())
    archc.import_hf(str(tmp_path / "new"), None, str(tmp_path / "a.safetensors"))
    archc.import_hf(str(tmp_path / "old"), None, str(tmp_path / "b.safetensors"))
    _assert_same_weights(tmp_path / "a.safetensors", tmp_path / "b.safetensors")


def test_a_damaged_checkpoint_is_a_diagnostic_and_nothing_is_written(tmp_path, capsys):
    from archc.cli import main

    _save(tmp_path / "hf", "llama")
    data = (tmp_path / "hf" / "model.safetensors").read_bytes()
    (tmp_path / "hf" / "model.safetensors").write_bytes(data[:len(data) // 2])  # truncated
    assert main(["import-hf", str(tmp_path / "hf"), "-o", str(tmp_path / "m.arch"),
                 "--weights", str(tmp_path / "m.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "ARC1401" in err and "impossible entry" in err and "Traceback" not in err
    assert not (tmp_path / "m.arch").exists() and not (tmp_path / "m.safetensors").exists()


def test_an_import_never_replaces_its_own_source_or_half_writes(tmp_path):
    _save(tmp_path, "llama")
    source = (tmp_path / "model.safetensors").read_bytes()
    with pytest.raises(HFImportError, match="a file this import reads"):
        archc.import_hf(str(tmp_path), str(tmp_path / "m.arch"), str(tmp_path / "model.safetensors"), force=True)
    assert (tmp_path / "model.safetensors").read_bytes() == source and not (tmp_path / "m.arch").exists()
    # an existing spec is refused before the weights are written
    (tmp_path / "m.arch").write_text("mine")
    from archc.files import FileError

    with pytest.raises(FileError, match="already exists"):
        archc.import_hf(str(tmp_path), str(tmp_path / "m.arch"), str(tmp_path / "w.safetensors"))
    assert (tmp_path / "m.arch").read_text() == "mine" and not (tmp_path / "w.safetensors").exists()


def _bert(tmp_path, head: str, **config):
    """A random BERT with `head`, its 1-d parameters (biases, norms) perturbed off their inits,
    saved; the fp64 transformers model and (ids, token types, a padded attention mask)."""
    cfg = transformers.BertConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=96, max_position_embeddings=64, **config)
    torch.manual_seed(0)
    hf = getattr(transformers, head)(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.2)
    hf.save_pretrained(tmp_path / "hf")
    mask = torch.ones(3, 16, dtype=torch.long)
    mask[1, 10:] = 0
    return hf.double(), (torch.randint(0, 128, (3, 16)), torch.randint(0, 2, (3, 16)), mask)


def _imported(tmp_path):
    archc.import_hf(str(tmp_path / "hf"), str(tmp_path / "m.arch"), str(tmp_path / "m.safetensors"))
    graph = archc.load(str(tmp_path / "m.arch")).graph
    model = archc.build(graph).double().eval()
    load_weights(model, tmp_path / "m.safetensors")
    return graph, model


def test_bert_imports_with_its_classification_head(tmp_path):
    """BERT (post-norm encoder, token types, the [CLS] pooler): the classifier's logits with padding
    and token types equal transformers' (fp64), and the count is exact; exported back (with a
    dropout added to the spec: identity at inference) transformers loads it as itself."""
    from archc.hf.exporter import export_hf

    hf, (ids, types, mask) = _bert(tmp_path, "BertForSequenceClassification", num_labels=3)
    graph, model = _imported(tmp_path)
    assert estimate_cost(graph, CostCtx()).total.params == hf.num_parameters()
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask, token_type_ids=types).logits
        torch.testing.assert_close(model(ids, attention_mask=mask, token_type_ids=types).logits, expected,
                                   atol=1e-6, rtol=1e-6)
    text = (tmp_path / "m.arch").read_text().replace("x = layernorm(x, eps=eps)\n",
                                                      "x = dropout(layernorm(x, eps=eps), p=0.1)\n")
    assert export_hf(model, text, "m.arch", tmp_path / "out").model_type == "bert"
    again = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "out").double().eval()
    assert type(again).__name__ == "BertForSequenceClassification"
    with torch.no_grad():
        torch.testing.assert_close(again(ids, attention_mask=mask, token_type_ids=types).logits, expected,
                                   atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_bert_imports_with_its_masked_lm_head(tmp_path, tied):
    """BERT's masked-LM head (dense, GELU, LayerNorm, logits tied to the word embeddings plus a
    bias): logits and the masked-LM loss (unshifted labels, −100 ignored) equal transformers'
    (fp64); exported back, `AutoModelForMaskedLM` loads it and computes the same logits. Untied,
    transformers' `cls.predictions.bias` is a parameter its forward never reads (the decoder's
    own bias is): the count is one vocabulary's worth above archc's."""
    from archc.hf.exporter import export_hf

    hf, (ids, types, mask) = _bert(tmp_path, "BertForMaskedLM", tie_word_embeddings=tied)
    graph, model = _imported(tmp_path)
    assert "lm_head(h, tied=" + ("true" if tied else "false") in (tmp_path / "m.arch").read_text()
    assert estimate_cost(graph, CostCtx()).total.params == hf.num_parameters() - (0 if tied else 128)
    labels = torch.full_like(ids, -100)
    labels[:, 3::5] = ids[:, 3::5]
    with torch.no_grad():
        ours, theirs = (m(ids, attention_mask=mask, token_type_ids=types, labels=labels) for m in (model, hf))
        torch.testing.assert_close(ours.logits, theirs.logits, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(ours.loss.double(), theirs.loss, atol=1e-6, rtol=1e-6)
    assert export_hf(model, (tmp_path / "m.arch").read_text(), "m.arch", tmp_path / "out").model_type == "bert"
    again = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "out").double().eval()
    with torch.no_grad():
        torch.testing.assert_close(again(ids, attention_mask=mask, token_type_ids=types).logits, theirs.logits,
                                   atol=1e-6, rtol=1e-6)


def test_bert_heads_archc_does_not_have_are_refused_by_name(tmp_path):
    cfg = transformers.BertConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=96)
    transformers.BertForPreTraining(cfg).save_pretrained(tmp_path / "pt")
    with pytest.raises(HFImportError, match="BertForPreTraining") as e:
        import_hf(tmp_path / "pt")
    assert e.value.field == "architectures"


def test_the_weights_stream_is_the_same_through_every_copy_path(tmp_path, monkeypatch):
    """The kernel copy (`sendfile`) and the fallback of chunked reads write the same bytes, with
    the disk writeback started after every tensor (its thread on every path)."""
    from archc.hf import importer

    _save(tmp_path / "hf", "llama")
    archc.import_hf(str(tmp_path / "hf"), str(tmp_path / "a.arch"), str(tmp_path / "a.safetensors"))
    started = []
    monkeypatch.setattr(importer, "WRITEBACK_BYTES", 1)
    monkeypatch.setattr(importer._Writeback, "_start", staticmethod(lambda fd, at, n: started.append(n)))

    def refused(*args):
        raise OSError("not on this file system")

    monkeypatch.setattr(importer.os, "sendfile", refused)
    archc.import_hf(str(tmp_path / "hf"), str(tmp_path / "b.arch"), str(tmp_path / "b.safetensors"))
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    header = 8 + int.from_bytes((tmp_path / "a.safetensors").read_bytes()[:8], "little")
    assert sum(started) == (tmp_path / "a.safetensors").stat().st_size - header
