"""Every imported family at its published size, on the meta device: the config of a released
checkpoint (its widths, as published) → `archc import-hf`'s spec → `archc summary`'s parameter
count against transformers' model of the same config built on the meta device (no weights are
allocated or downloaded), and against archc's hand-written spec of the model where `specs/` has
one; and what `archc export-hf` writes for that spec and the hand-written one (found to be the
family: `archc/hf/match.py`). A second table says what export-hf writes for every spec in
`specs/`. The tables go in docs/hf.md.

    .venv/bin/python tools/hf_families.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.results import ROOT, load_results, publish, record

START, END = "<!-- hf families table: tools/hf_families.py -->", "<!-- end of hf families table -->"
SPECS_START, SPECS_END = "<!-- export-hf specs table: tools/hf_families.py -->", "<!-- end of export-hf specs table -->"

#: name → (model_type, config fields as published, transformers class, archc's hand-written spec or None)
#: bert-base-uncased's encoder, shared by its two heads below
BERT_BASE = {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072, "max_position_embeddings": 512, "type_vocab_size": 2,
             "layer_norm_eps": 1e-12, "pad_token_id": 0}

CONFIGS = {
    "Llama-2-7B": ("llama", {"vocab_size": 32000, "hidden_size": 4096, "num_hidden_layers": 32,
                             "num_attention_heads": 32, "num_key_value_heads": 32, "intermediate_size": 11008,
                             "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False},
                   "LlamaConfig", "llama2-7b"),
    "Llama-3-8B": ("llama", {"vocab_size": 128256, "hidden_size": 4096, "num_hidden_layers": 32,
                             "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
                             "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": False},
                   "LlamaConfig", None),
    "Llama-3.1-8B": ("llama", {"vocab_size": 128256, "hidden_size": 4096, "num_hidden_layers": 32,
                               "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
                               "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": False,
                               "max_position_embeddings": 131072,
                               "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}},
                     "LlamaConfig", None),
    "Mistral-7B-v0.1": ("mistral", {"vocab_size": 32000, "hidden_size": 4096, "num_hidden_layers": 32,
                                    "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
                                    "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "sliding_window": 4096,
                                    "tie_word_embeddings": False},
                        "MistralConfig", "mistral-7b"),
    "Mixtral-8x7B-v0.1": ("mixtral", {"vocab_size": 32000, "hidden_size": 4096, "num_hidden_layers": 32,
                                      "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
                                      "rms_norm_eps": 1e-5, "rope_theta": 1000000.0, "num_local_experts": 8,
                                      "num_experts_per_tok": 2, "router_aux_loss_coef": 0.02,
                                      "tie_word_embeddings": False},
                          "MixtralConfig", "mixtral-8x7b"),
    "OLMo-1B-hf": ("olmo", {"vocab_size": 50304, "hidden_size": 2048, "num_hidden_layers": 16,
                            "num_attention_heads": 16, "num_key_value_heads": 16, "intermediate_size": 8192,
                            "rope_theta": 10000.0, "tie_word_embeddings": True, "pad_token_id": 1,
                            "eos_token_id": 50279},
                   "OlmoConfig", None),
    "Phi-3-mini-4k-instruct": ("phi3", {"vocab_size": 32064, "hidden_size": 3072, "num_hidden_layers": 32,
                                        "num_attention_heads": 32, "num_key_value_heads": 32,
                                        "intermediate_size": 8192, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                                        "sliding_window": 2047, "tie_word_embeddings": False,
                                        "max_position_embeddings": 4096, "original_max_position_embeddings": 4096,
                                        "pad_token_id": 32000, "bos_token_id": 1, "eos_token_id": 32000},
                               "Phi3Config", None),
    "Qwen2-0.5B": ("qwen2", {"vocab_size": 151936, "hidden_size": 896, "num_hidden_layers": 24,
                             "num_attention_heads": 14, "num_key_value_heads": 2, "intermediate_size": 4864,
                             "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": True,
                             "use_sliding_window": False, "max_window_layers": 24},
                   "Qwen2Config", "qwen2-0.5b"),
    "Qwen3-0.6B": ("qwen3", {"vocab_size": 151936, "hidden_size": 1024, "num_hidden_layers": 28,
                             "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
                             "intermediate_size": 3072, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
                             "tie_word_embeddings": True, "use_sliding_window": False, "max_window_layers": 28},
                   "Qwen3Config", None),
    "Qwen1.5-MoE-A2.7B": ("qwen2_moe", {"vocab_size": 151936, "hidden_size": 2048, "num_hidden_layers": 24,
                                        "num_attention_heads": 16, "num_key_value_heads": 16,
                                        "intermediate_size": 5632, "moe_intermediate_size": 1408,
                                        "shared_expert_intermediate_size": 5632, "num_experts": 60,
                                        "num_experts_per_tok": 4, "norm_topk_prob": False, "rms_norm_eps": 1e-6,
                                        "rope_theta": 1000000.0, "tie_word_embeddings": False,
                                        "use_sliding_window": False, "max_window_layers": 21},
                          "Qwen2MoeConfig", None),
    "Qwen3-30B-A3B": ("qwen3_moe", {"vocab_size": 151936, "hidden_size": 2048, "num_hidden_layers": 48,
                                    "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
                                    "intermediate_size": 6144, "moe_intermediate_size": 768, "num_experts": 128,
                                    "num_experts_per_tok": 8, "norm_topk_prob": True, "rms_norm_eps": 1e-6,
                                    "rope_theta": 1000000.0, "tie_word_embeddings": False,
                                    "use_sliding_window": False},
                      "Qwen3MoeConfig", None),
    "OLMo-2-1124-7B": ("olmo2", {"vocab_size": 100352, "hidden_size": 4096, "num_hidden_layers": 32,
                                 "num_attention_heads": 32, "num_key_value_heads": 32, "intermediate_size": 11008,
                                 "rms_norm_eps": 1e-6, "rope_theta": 500000.0, "tie_word_embeddings": False,
                                 "pad_token_id": 100277, "eos_token_id": 100257},
                       "Olmo2Config", None),
    "granite-3.0-2b-base": ("granite", {"vocab_size": 49155, "hidden_size": 2048, "num_hidden_layers": 40,
                                        "num_attention_heads": 32, "num_key_value_heads": 8,
                                        "intermediate_size": 8192, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                                        "embedding_multiplier": 12.0, "residual_multiplier": 0.22,
                                        "attention_multiplier": 0.015625, "logits_scaling": 8.0,
                                        "tie_word_embeddings": True, "pad_token_id": 0, "bos_token_id": 0,
                                        "eos_token_id": 0},
                            "GraniteConfig", None),
    "gemma-2b": ("gemma", {"vocab_size": 256000, "hidden_size": 2048, "num_hidden_layers": 18,
                           "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256,
                           "intermediate_size": 16384, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
                           "hidden_act": "gelu", "tie_word_embeddings": True},
                 "GemmaConfig", None),
    "gemma-2-2b": ("gemma2", {"vocab_size": 256000, "hidden_size": 2304, "num_hidden_layers": 26,
                              "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                              "intermediate_size": 9216, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
                              "query_pre_attn_scalar": 256, "sliding_window": 4096,
                              "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
                              "tie_word_embeddings": True},
                   "Gemma2Config", None),
    "gemma-3-1b-pt": ("gemma3_text", {"vocab_size": 262144, "hidden_size": 1152, "num_hidden_layers": 26,
                                      "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
                                      "intermediate_size": 6912, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
                                      "rope_local_base_freq": 10000.0, "query_pre_attn_scalar": 256,
                                      "sliding_window": 512, "sliding_window_pattern": 6,
                                      "tie_word_embeddings": True},
                      "Gemma3TextConfig", None),
    "pythia-160m": ("gpt_neox", {"vocab_size": 50304, "hidden_size": 768, "num_hidden_layers": 12,
                                 "num_attention_heads": 12, "intermediate_size": 3072, "rotary_pct": 0.25,
                                 "rotary_emb_base": 10000, "use_parallel_residual": True, "layer_norm_eps": 1e-5,
                                 "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 0},
                    "GPTNeoXConfig", None),
    "stablelm-2-1_6b": ("stablelm", {"vocab_size": 100352, "hidden_size": 2048, "num_hidden_layers": 24,
                                     "num_attention_heads": 32, "num_key_value_heads": 32, "intermediate_size": 5632,
                                     "partial_rotary_factor": 0.25, "rope_theta": 10000.0, "use_qkv_bias": True,
                                     "qk_layernorm": False, "use_parallel_residual": False, "layer_norm_eps": 1e-5,
                                     "tie_word_embeddings": False, "bos_token_id": 100257,
                                     "eos_token_id": 100257},
                        "StableLmConfig", None),
    "falcon-mamba-7b": ("falcon_mamba", {"vocab_size": 65024, "hidden_size": 4096, "num_hidden_layers": 64,
                                         "state_size": 16, "expand": 2, "intermediate_size": 8192, "conv_kernel": 4,
                                         "time_step_rank": 256, "mixer_rms_eps": 1e-6, "layer_norm_epsilon": 1e-5,
                                         "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 11,
                                         "pad_token_id": 11},
                        "FalconMambaConfig", None),
    "Jamba-v0.1": ("jamba", {"vocab_size": 65536, "hidden_size": 4096, "num_hidden_layers": 32,
                             "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
                             "num_experts": 16, "num_experts_per_tok": 2, "expert_layer_period": 2,
                             "expert_layer_offset": 1, "attn_layer_period": 8, "attn_layer_offset": 4,
                             "mamba_d_state": 16, "mamba_d_conv": 4, "mamba_expand": 2, "mamba_dt_rank": 256,
                             "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "use_mamba_kernels": False},
                   "JambaConfig", None),
    "Bamba-9B": ("bamba", {"vocab_size": 128256, "hidden_size": 4096, "num_hidden_layers": 32,
                           "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
                           "attn_layer_indices": [9, 18, 27], "mamba_n_heads": 128, "mamba_d_head": 64,
                           "mamba_n_groups": 1, "mamba_d_state": 128, "mamba_d_conv": 4, "mamba_expand": 2,
                           "mamba_chunk_size": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                           "partial_rotary_factor": 0.5, "tie_word_embeddings": False},
                 "BambaConfig", None),
    "Qwen3-Next-80B-A3B": ("qwen3_next", {"vocab_size": 151936, "hidden_size": 2048, "num_hidden_layers": 48,
                                          "num_attention_heads": 16, "num_key_value_heads": 2, "head_dim": 256,
                                          "intermediate_size": 5120, "linear_num_key_heads": 16,
                                          "linear_key_head_dim": 128, "linear_num_value_heads": 32,
                                          "linear_value_head_dim": 128, "linear_conv_kernel_dim": 4,
                                          "moe_intermediate_size": 512, "shared_expert_intermediate_size": 512,
                                          "num_experts": 512, "num_experts_per_tok": 10, "norm_topk_prob": True,
                                          "rms_norm_eps": 1e-6, "rope_theta": 10000000.0,
                                          "partial_rotary_factor": 0.25, "full_attention_interval": 4,
                                          "tie_word_embeddings": False},
                           "Qwen3NextConfig", None),
    # as published: the masked-LM head
    "bert-base-uncased": ("bert", {**BERT_BASE, "architectures": ["BertForMaskedLM"]}, "BertConfig", None),
    # the same encoder fine-tuned as a two-class classifier (specs/bert-base.arch by hand)
    "bert-base-uncased (classifier)": ("bert", {**BERT_BASE, "architectures": ["BertForSequenceClassification"]},
                                       "BertConfig", "bert-base"),
    "gpt2": ("gpt2", {"vocab_size": 50257, "n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024},
             "GPT2Config", "gpt2"),
    "mamba-130m-hf": ("mamba", {"vocab_size": 50280, "hidden_size": 768, "num_hidden_layers": 24, "state_size": 16,
                                "expand": 2, "conv_kernel": 4, "time_step_rank": 48, "layer_norm_epsilon": 1e-5,
                                "tie_word_embeddings": True},
                      "MambaConfig", "mamba-130m"),
    "Mamba-Codestral-7B-v0.1": ("mamba2", {"vocab_size": 32768, "hidden_size": 4096, "num_hidden_layers": 64,
                                           "state_size": 128, "expand": 2, "head_dim": 64, "num_heads": 128,
                                           "n_groups": 8, "conv_kernel": 4, "layer_norm_epsilon": 1e-5,
                                           "chunk_size": 256, "tie_word_embeddings": False},
                                "Mamba2Config", None),
}


def auto_class(config: dict):
    """The transformers Auto class of a config's `architectures` (BERT's heads), else the causal LM's."""
    import transformers

    from archc.hf.exporter import AUTO_CLASS

    arch = (config.get("architectures") or [""])[0]
    return getattr(transformers, AUTO_CLASS.get(arch, "AutoModelForCausalLM"))


def measure(name: str) -> dict:
    import torch
    import transformers

    import archc
    from archc.ir.cost import CostCtx
    from archc.passes.estimate_cost import estimate_cost

    model_type, fields, cls, spec = CONFIGS[name]
    cfg = getattr(transformers, cls)(**fields)
    with tempfile.TemporaryDirectory() as d:
        cfg.save_pretrained(d)
        t0 = time.perf_counter()
        text = archc.import_hf(d)
        seconds = time.perf_counter() - t0
    ours = estimate_cost(archc.loads(text, f"{name}.arch").graph, CostCtx()).total.params
    with torch.device("meta"):
        hf = auto_class(fields).from_config(cfg)
    theirs = hf.num_parameters()
    hand = (estimate_cost(archc.load(str(ROOT / "specs" / f"{spec}.arch")).graph, CostCtx()).total.params
            if spec else None)
    from archc.hf.match import match_family

    match, _ = match_family(archc.loads(text, f"{name}.arch").graph)
    exported = match.config["model_type"] if match else "archc"
    hand_exported = None
    if spec:
        m, _ = match_family(archc.load(str(ROOT / "specs" / f"{spec}.arch")).graph)
        hand_exported = m.config["model_type"] if m else "archc"
    # a spec does not remember its origin: export-hf writes the first family it is exactly (a
    # Phi-3 with full rotary is a Mistral); what counts is that it is written as a family
    ok = ours == theirs and hand in (None, ours) and exported != "archc" and hand_exported in (None, exported)
    return {"name": name, "family": model_type, "archc": ours, "transformers": theirs, "hand_written": hand,
            "spec": spec, "import_s": round(seconds, 3), "export_hf": exported, "hand_export_hf": hand_exported,
            "status": "ok" if ok else "MISMATCH"}


def table(results: dict) -> str:
    rows = ["| checkpoint (published config) | family | archc import-hf | transformers (meta) | specs/ by hand | "
            "import s | export-hf writes (imported; by hand) | status |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in CONFIGS:
        r = results.get(name)
        if r:
            hand = f"{r['hand_written']:,} (`{r['spec']}`)" if r["hand_written"] else "—"
            written = f"`{r.get('export_hf')}`" + (f"; `{r['hand_export_hf']}`" if r.get("hand_export_hf") else "")
            rows.append(f"| {name} | {r['family']} | {r['archc']:,} | {r['transformers']:,} | {hand} | "
                        f"{r['import_s']} | {written} | {r['status']} |")
    return "\n".join(rows)


def specs_table() -> str:
    """What export-hf writes for every spec of specs/: its family, or the modeling file and why."""
    import archc
    from archc.hf.match import match_family
    from archc.passes.facts import head_loss, is_causal

    rows = ["| spec | export-hf writes | why not a family | transformers loads it: max abs logit diff |",
            "| --- | --- | --- | --- |"]
    for path in sorted((ROOT / "specs").glob("*.arch")):
        graph = archc.load(str(path)).graph
        match, why = match_family(graph)
        if match is None and (head_loss(graph) != "lm" or not is_causal(graph) or len(graph.inputs) != 1):
            rows.append(f"| `{path.stem}` | refused (ARC1402) | not a causal language model, nor BERT | — |")
            continue
        rows.append(f"| `{path.stem}` | " + (f"`{match.config['model_type']}` | — |" if match else
                                              f"archc's modeling file | {why.replace('|', '/')} |")
                    + f" {load_check(graph, path)} |")
    return "\n".join(rows)


def load_check(graph, path: Path) -> str:
    """A random init of the spec exported and loaded back with `AutoModelForCausalLM` (BERT's own
    Auto class): the largest logit difference against archc's own forward (skipped above 100M
    parameters)."""
    import torch

    from archc.backends.torch import build
    from archc.hf.exporter import export_hf
    from archc.ir.cost import CostCtx
    from archc.passes.estimate_cost import estimate_cost

    if estimate_cost(graph, CostCtx()).total.params > 100e6:
        return "not run (over 100M parameters)"
    model = build(graph, seed=0, pipeline="O0").eval()
    with tempfile.TemporaryDirectory() as d:
        export_hf(model, path.read_text(), path.name, Path(d) / "out")
        config = json.loads((Path(d) / "out" / "config.json").read_text())
        hf = auto_class(config).from_pretrained(Path(d) / "out", trust_remote_code=True).eval()
        ids = torch.randint(0, model.out_type_vocab(), (2, 64), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            diff = float((hf(ids).logits - model(ids).logits).abs().max())
    return f"{diff:.1e}" + (" ok" if diff <= 1e-4 else " MISMATCH")


def main() -> None:
    path = ROOT / "docs" / "hf_results.json"
    results = load_results(path)
    for name in CONFIGS:
        record(path, results, name, measure(name))
    publish(path, ROOT / "docs" / "hf.md", START, END, table(results))
    publish(path, ROOT / "docs" / "hf.md", SPECS_START, SPECS_END, specs_table())
    print(json.dumps({"mismatches": [k for k, r in results.items() if r["status"] != "ok"]}))


if __name__ == "__main__":
    main()
