"""Parameter counts against transformers' own models and torch.nn's recurrent cells (built on the
meta device: no memory, no downloads). Skipped where transformers or torch is not installed; the
torch-free cost tests are in test_estimate_cost.py."""

from __future__ import annotations

import pytest

import archc
from archc.ir.cost import CostCtx
from archc.passes.estimate_cost import estimate_cost

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")


def _hf_params(cls, cfg) -> int:
    with torch.device("meta"):
        model = cls(cfg)
    return sum(p.numel() for p in model.parameters())


HF_CASES = {
    "llama2-7b": lambda: (T.LlamaForCausalLM, T.LlamaConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, tie_word_embeddings=False)),
    "gpt2": lambda: (T.GPT2LMHeadModel, T.GPT2Config()),
    "mamba-130m": lambda: (T.MambaForCausalLM, T.MambaConfig(
        vocab_size=50280, hidden_size=768, num_hidden_layers=24, state_size=16, expand=2, conv_kernel=4,
        tie_word_embeddings=True)),
    "mistral-7b": lambda: (T.MistralForCausalLM, T.MistralConfig(tie_word_embeddings=False)),
    "mixtral-8x7b": lambda: (T.MixtralForCausalLM, T.MixtralConfig(tie_word_embeddings=False)),
    "qwen2-0.5b": lambda: (T.Qwen2ForCausalLM, T.Qwen2Config(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, tie_word_embeddings=True)),
    "bert-base": lambda: (T.BertForSequenceClassification, T.BertConfig(num_labels=2)),
    "rwkv-169m": lambda: (T.RwkvForCausalLM, T.RwkvConfig(
        vocab_size=50277, hidden_size=768, num_hidden_layers=12, intermediate_size=3072, attention_hidden_size=768,
        tie_word_embeddings=False)),
    "llama-tiny": lambda: (T.LlamaForCausalLM, T.LlamaConfig(
        vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=2, tie_word_embeddings=True)),
    "mixtral-tiny": lambda: (T.MixtralForCausalLM, T.MixtralConfig(
        vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, tie_word_embeddings=True)),
    "mamba2-tiny": lambda: (T.Mamba2ForCausalLM, T.Mamba2Config(
        vocab_size=4096, hidden_size=256, num_hidden_layers=4, state_size=64, expand=2, head_dim=64, num_heads=8,
        n_groups=1, tie_word_embeddings=True)),
}


@pytest.mark.parametrize("spec", sorted(HF_CASES))
def test_parameter_count_equals_transformers(spec):
    cls, cfg = HF_CASES[spec]()
    assert archc.summary(f"specs/{spec}.arch").total.params == _hf_params(cls, cfg)


def test_lstm_counts_match_torch_nn():
    g = archc.load("specs/lstm-tagger.arch").graph
    report = estimate_cost(g, CostCtx())
    lstm = torch.nn.LSTM(256, 256, num_layers=2, bidirectional=True)
    assert report.layers["lstm"].params == sum(p.numel() for p in lstm.parameters())
    gru_spec = archc.loads("model m(t) {\n  return token_cls_head(gru(embed(t, 10, 32), hidden=48, layers=3), classes=2)\n}\n")
    gru = torch.nn.GRU(32, 48, num_layers=3)
    assert estimate_cost(gru_spec.graph, CostCtx()).layers["gru"].params == sum(p.numel() for p in gru.parameters())
