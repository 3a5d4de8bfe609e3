"""archc's modules against transformers' own implementations, weights copied across.

Each test writes a spec at a small size, builds the transformers model from a config object
(random init, nothing downloaded), copies its weights into archc's parameter names and compares
the logits in fp32 (atol 1e-5, as optimum's ONNX validation and PyTorch's fp32 SDPA tests).
"""

from __future__ import annotations

import pytest
import torch

import archc
from archc.backends.torch import build
from tests.conftest import copy_weights

transformers = pytest.importorskip("transformers")

ATOL = 1e-5


def _build(spec: str):
    return build(archc.loads(spec, "ref.arch").graph, seed=0).eval()


def _llama_like_map(hf_sd: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    m = {"embed.weight": hf_sd["model.embed_tokens.weight"], "norm.weight": hf_sd["model.norm.weight"]}
    for i in range(layers):
        p = f"model.layers.{i}."
        m[f"layers.{i}.norm.weight"] = hf_sd[p + "input_layernorm.weight"]
        m[f"layers.{i}.norm_1.weight"] = hf_sd[p + "post_attention_layernorm.weight"]
        for w in "qkvo":
            m[f"layers.{i}.attn.{w}_proj.weight"] = hf_sd[p + f"self_attn.{w}_proj.weight"]
        for w in ("gate", "up", "down"):
            if p + f"mlp.{w}_proj.weight" in hf_sd:
                m[f"layers.{i}.mlp.{w}_proj.weight"] = hf_sd[p + f"mlp.{w}_proj.weight"]
    return m


LLAMA_SPEC = """
model ref(tokens) {{
  block decoder(x) {{
    x = x + attention(rmsnorm(x), heads=4, kv_heads={kv}, causal=true, pos=rope(theta={theta}{scaling}){window})
    return x + swiglu(rmsnorm(x), hidden=96)
  }}
  x = embed(tokens, 128, 64)
  x = repeat(2, decoder)(x)
  return lm_head(rmsnorm(x), tied=true)
}}
"""


def llama_pair(kv: int, seed: int = 0):
    """(transformers' LlamaForCausalLM, archc's model of the same spec) with the same weights."""
    cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=kv, intermediate_size=96, rope_theta=500.0,
                                   tie_word_embeddings=True, attn_implementation="eager")
    torch.manual_seed(seed)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    ours = _build(LLAMA_SPEC.format(kv=kv, theta=500, scaling="", window=""))
    copy_weights(ours, _llama_like_map(hf.state_dict(), 2))
    return hf, ours


@pytest.mark.parametrize("kv", [4, 2, 1], ids=["mha", "gqa", "mqa"])
def test_llama_matches_transformers(kv):
    hf, ours = llama_pair(kv)
    ids = torch.randint(0, 128, (2, 24))
    ref = hf(ids).logits
    torch.testing.assert_close(ours(ids).logits, ref, atol=ATOL, rtol=1.3e-6)
    # labels: the same shifted next-token loss as LlamaForCausalLM
    torch.testing.assert_close(ours(ids, labels=ids).loss, hf(ids, labels=ids).loss, atol=ATOL, rtol=1e-6)


def test_llama_linear_rope_scaling_matches_transformers():
    cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=96, tie_word_embeddings=True,
                                   rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0})
    torch.manual_seed(1)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    ours = _build(LLAMA_SPEC.format(kv=2, theta=10000, scaling=', scaling="linear", factor=4', window=""))
    copy_weights(ours, _llama_like_map(hf.state_dict(), 2))
    ids = torch.randint(0, 128, (1, 40))
    torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=ATOL, rtol=1.3e-6)


@pytest.mark.parametrize("seq", [12, 40], ids=["masked", "blockwise"])
def test_mistral_sliding_window_matches_transformers(seq):
    cfg = transformers.MistralConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     num_key_value_heads=2, intermediate_size=96, sliding_window=8,
                                     tie_word_embeddings=True, attn_implementation="eager")
    torch.manual_seed(2)
    hf = transformers.MistralForCausalLM(cfg).eval()
    ours = _build(LLAMA_SPEC.format(kv=2, theta=10000, scaling="", window=", window=8"))
    copy_weights(ours, _llama_like_map(hf.state_dict(), 2))
    ids = torch.randint(0, 128, (2, seq))
    torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=ATOL, rtol=1.3e-6)


GPT2_SPEC = """
model ref(tokens) {
  block layer(x) {
    x = x + attention(layernorm(x), heads=4, causal=true, bias=true)
    return x + mlp(layernorm(x), hidden=256, act="gelu_tanh")
  }
  x = embed(tokens, 128, 64)
  x = learned_pos(x, max_len=64)
  x = repeat(2, layer, name="h")(x)
  return lm_head(layernorm(x), tied=true)
}
"""


def test_gpt2_matches_transformers():
    cfg = transformers.GPT2Config(vocab_size=128, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(3)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    sd = hf.state_dict()
    m = {"embed.weight": sd["transformer.wte.weight"], "pos_embed.weight": sd["transformer.wpe.weight"],
         "norm.weight": sd["transformer.ln_f.weight"], "norm.bias": sd["transformer.ln_f.bias"]}
    for i in range(2):
        p = f"transformer.h.{i}."
        for ours_n, theirs in (("norm", "ln_1"), ("norm_1", "ln_2")):
            m[f"h.{i}.{ours_n}.weight"] = sd[p + theirs + ".weight"]
            m[f"h.{i}.{ours_n}.bias"] = sd[p + theirs + ".bias"]
        # GPT-2's Conv1D stores [in, out]; q, k, v are fused in c_attn
        w, b = sd[p + "attn.c_attn.weight"].t(), sd[p + "attn.c_attn.bias"]
        for j, n in enumerate("qkv"):
            m[f"h.{i}.attn.{n}_proj.weight"] = w[j * 64:(j + 1) * 64]
            m[f"h.{i}.attn.{n}_proj.bias"] = b[j * 64:(j + 1) * 64]
        m[f"h.{i}.attn.o_proj.weight"] = sd[p + "attn.c_proj.weight"].t()
        m[f"h.{i}.attn.o_proj.bias"] = sd[p + "attn.c_proj.bias"]
        m[f"h.{i}.mlp.up_proj.weight"] = sd[p + "mlp.c_fc.weight"].t()
        m[f"h.{i}.mlp.up_proj.bias"] = sd[p + "mlp.c_fc.bias"]
        m[f"h.{i}.mlp.down_proj.weight"] = sd[p + "mlp.c_proj.weight"].t()
        m[f"h.{i}.mlp.down_proj.bias"] = sd[p + "mlp.c_proj.bias"]
    ours = _build(GPT2_SPEC)
    copy_weights(ours, m)
    ids = torch.randint(0, 128, (2, 20))
    torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=ATOL, rtol=1.3e-6)


BERT_SPEC = """
model ref(tokens) {
  block encoder(x) {
    x = layernorm(x + attention(x, heads=4, bias=true), eps=1e-12)
    return layernorm(x + mlp(x, hidden=128, act="gelu"), eps=1e-12)
  }
  x = embed(tokens, 128, 64, token_types=2)
  x = learned_pos(x, max_len=64)
  x = dropout(layernorm(x, eps=1e-12), p=0.1)
  x = repeat(2, encoder, name="encoder")(x)
  return cls_head(x, classes=3, pool="cls", pooler=true)
}
"""


def test_bert_with_padding_and_token_types_matches_transformers():
    cfg = transformers.BertConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=128, max_position_embeddings=64, num_labels=3,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(4)
    hf = transformers.BertForSequenceClassification(cfg).eval()
    sd = hf.state_dict()
    e = "bert.embeddings."
    m = {"embed.weight": sd[e + "word_embeddings.weight"], "embed.token_type.weight": sd[e + "token_type_embeddings.weight"],
         "pos_embed.weight": sd[e + "position_embeddings.weight"], "norm.weight": sd[e + "LayerNorm.weight"],
         "norm.bias": sd[e + "LayerNorm.bias"], "classifier.pooler.weight": sd["bert.pooler.dense.weight"],
         "classifier.pooler.bias": sd["bert.pooler.dense.bias"], "classifier.classifier.weight": sd["classifier.weight"],
         "classifier.classifier.bias": sd["classifier.bias"]}
    for i in range(2):
        p, q = f"bert.encoder.layer.{i}.", f"encoder.{i}."
        for n, theirs in (("q", "query"), ("k", "key"), ("v", "value")):
            m[q + f"attn.{n}_proj.weight"] = sd[p + f"attention.self.{theirs}.weight"]
            m[q + f"attn.{n}_proj.bias"] = sd[p + f"attention.self.{theirs}.bias"]
        m[q + "attn.o_proj.weight"] = sd[p + "attention.output.dense.weight"]
        m[q + "attn.o_proj.bias"] = sd[p + "attention.output.dense.bias"]
        m[q + "norm.weight"] = sd[p + "attention.output.LayerNorm.weight"]
        m[q + "norm.bias"] = sd[p + "attention.output.LayerNorm.bias"]
        m[q + "mlp.up_proj.weight"] = sd[p + "intermediate.dense.weight"]
        m[q + "mlp.up_proj.bias"] = sd[p + "intermediate.dense.bias"]
        m[q + "mlp.down_proj.weight"] = sd[p + "output.dense.weight"]
        m[q + "mlp.down_proj.bias"] = sd[p + "output.dense.bias"]
        m[q + "norm_1.weight"] = sd[p + "output.LayerNorm.weight"]
        m[q + "norm_1.bias"] = sd[p + "output.LayerNorm.bias"]
    ours = _build(BERT_SPEC)
    copy_weights(ours, m)
    ids = torch.randint(0, 128, (3, 16))
    types = torch.randint(0, 2, (3, 16))
    mask = torch.ones(3, 16, dtype=torch.long)
    mask[1, 10:] = 0
    mask[2, 5:] = 0
    labels = torch.tensor([0, 2, 1])
    ref = hf(ids, attention_mask=mask, token_type_ids=types, labels=labels)
    out = ours(ids, attention_mask=mask, token_type_ids=types, labels=labels)
    torch.testing.assert_close(out.logits, ref.logits, atol=ATOL, rtol=1.3e-6)
    torch.testing.assert_close(out.loss, ref.loss, atol=ATOL, rtol=1e-6)


@pytest.mark.parametrize("heads", [4, 8, 12, 6])
def test_alibi_slopes_match_bloom(heads):
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    from archc.backends.torch.ops.positions import alibi_slopes

    mask = torch.ones(1, 3)
    # BLOOM's tensor is slope · key_position; at key position 1 it is the slope itself
    ref = build_alibi_tensor(mask, heads, torch.float32).reshape(heads, 3)[:, 1]
    torch.testing.assert_close(torch.tensor(alibi_slopes(heads)), ref)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_t5_buckets_match_transformers(bidirectional):
    from transformers.models.t5.modeling_t5 import T5Attention

    from archc.backends.torch.ops.positions import t5_bucket

    rel = torch.arange(-300, 300)[None, :].repeat(2, 1)
    ref = T5Attention._relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=32, max_distance=128)
    assert torch.equal(t5_bucket(rel, bidirectional, 32, 128), ref)


def test_ntk_rope_base_change():
    from archc.backends.torch.ops.positions import rope_inv_freq

    # NTK-aware scaling is RoPE with base θ·s^(d/(d−2)): the lowest frequency shrinks by exactly s
    plain = rope_inv_freq({"theta": 1e4, "scaling": "none", "factor": 1.0}, 64)
    ntk = rope_inv_freq({"theta": 1e4, "scaling": "ntk", "factor": 8.0}, 64)
    torch.testing.assert_close(ntk[0], plain[0])
    torch.testing.assert_close(ntk[-1], plain[-1] / 8.0, rtol=1e-5, atol=0)


MIXTRAL_SPEC = """
model ref(tokens) {
  block decoder(x) {
    x = x + attention(rmsnorm(x, eps=1e-5), heads=4, kv_heads=2, causal=true, pos=rope(theta=1e6))
    return x + moe(rmsnorm(x, eps=1e-5), experts=4, top_k=2, expert=swiglu(hidden=48), aux_loss=AUX)
  }
  x = embed(tokens, 64, 32)
  x = repeat(LAYERS, decoder)(x)
  return lm_head(rmsnorm(x, eps=1e-5))
}
"""


@pytest.mark.parametrize("layers", [1, 2])
def test_mixtral_matches_transformers(layers):
    cfg = transformers.MixtralConfig(vocab_size=64, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                                     num_key_value_heads=2, intermediate_size=48, num_local_experts=4,
                                     num_experts_per_tok=2, rope_theta=1e6, tie_word_embeddings=False,
                                     output_router_logits=True, router_aux_loss_coef=0.02)
    torch.manual_seed(5)
    hf = transformers.MixtralForCausalLM(cfg).eval()
    sd = hf.state_dict()
    m = _llama_like_map(sd, layers)
    m["lm_head.weight"] = sd["lm_head.weight"]
    for i in range(layers):
        p = f"model.layers.{i}.mlp."
        m[f"layers.{i}.moe.router.weight"] = sd[p + "gate.weight"]
        gate_up, down = sd[p + "experts.gate_up_proj"], sd[p + "experts.down_proj"]
        for e in range(4):
            m[f"layers.{i}.moe.experts.{e}.gate_proj.weight"] = gate_up[e, :48]
            m[f"layers.{i}.moe.experts.{e}.up_proj.weight"] = gate_up[e, 48:]
            m[f"layers.{i}.moe.experts.{e}.down_proj.weight"] = down[e]
    ours = _build(MIXTRAL_SPEC.replace("LAYERS", str(layers)).replace("AUX", "0.02"))
    copy_weights(ours, m)
    ids = torch.randint(0, 64, (2, 12))
    ref = hf(ids, labels=ids)
    out = ours(ids, labels=ids)
    torch.testing.assert_close(out.logits, ref.logits, atol=ATOL, rtol=1.3e-6)
    if layers == 1:  # transformers pools router statistics over all layers; one layer is per-layer
        torch.testing.assert_close(out.aux_loss, 0.02 * ref.aux_loss, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(out.loss, ref.loss, atol=ATOL, rtol=1e-5)


def test_geglu_matches_t5_gated_feed_forward():
    from transformers.models.t5.modeling_t5 import T5DenseGatedActDense

    from archc.backends.torch.module import Context

    cfg = transformers.T5Config(d_model=32, d_ff=48, dense_act_fn="gelu_new", dropout_rate=0.0)
    torch.manual_seed(6)
    ref = T5DenseGatedActDense(cfg).eval()
    model = _build("""
model t(tokens) {
  x = embed(tokens, 10, 32)
  return geglu(x, hidden=48)
}""")
    ff = model.get_submodule("mlp")
    copy_weights(ff, {"gate_proj.weight": ref.wi_0.weight, "up_proj.weight": ref.wi_1.weight,
               "down_proj.weight": ref.wo.weight})
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(ff(x, Context(torch.arange(5))), ref(x), atol=ATOL, rtol=1.3e-6)


def test_sinusoids_match_transformers():
    from transformers.models.distilbert.modeling_distilbert import create_sinusoidal_embeddings

    from archc.backends.torch.ops.embeddings import sinusoids

    ref = torch.empty(50, 16)
    create_sinusoidal_embeddings(50, 16, ref)
    torch.testing.assert_close(sinusoids(torch.arange(50), 16, 10000.0), ref, atol=1e-5, rtol=1e-5)


def test_last_token_pooling_matches_llama_sequence_classifier():
    """`cls_head(pool="last")` scores the last real token of right-padded rows, as
    LlamaForSequenceClassification (which finds it from the pad token)."""
    cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=96, rope_theta=500.0, num_labels=3,
                                   pad_token_id=0, attn_implementation="eager")
    torch.manual_seed(7)
    hf = transformers.LlamaForSequenceClassification(cfg).eval()
    spec = LLAMA_SPEC.format(kv=2, theta=500, scaling="", window="").replace(
        "lm_head(rmsnorm(x), tied=true)", 'cls_head(rmsnorm(x), classes=3, pool="last")')
    ours = _build(spec)
    sd = hf.state_dict()
    m = _llama_like_map(sd, 2)
    m["classifier.classifier.weight"] = sd["score.weight"]
    m["classifier.classifier.bias"] = torch.zeros(3)  # the score layer has no bias
    copy_weights(ours, m)
    ids = torch.randint(1, 128, (3, 10))
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    ids = ids * mask  # pad id 0 after the real tokens
    torch.testing.assert_close(ours(ids, attention_mask=mask).logits, hf(ids, attention_mask=mask).logits,
                               atol=ATOL, rtol=1.3e-6)


def test_mean_pooling_and_token_classification_losses():
    """Mean pooling averages real tokens only; token classification is per-token cross-entropy
    with -100 ignored (torch's own F.cross_entropy as the reference)."""
    import torch.nn.functional as F

    base = LLAMA_SPEC.format(kv=2, theta=500, scaling="", window="")
    mean_model = _build(base.replace("lm_head(rmsnorm(x), tied=true)", 'cls_head(x, classes=2, pool="mean")'))
    ids = torch.randint(0, 128, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0
    out = mean_model(ids, attention_mask=mask).logits
    alone = mean_model(ids[1:, :5]).logits
    torch.testing.assert_close(out[1:], alone, atol=ATOL, rtol=1.3e-6)

    tag = _build(base.replace("lm_head(rmsnorm(x), tied=true)", "token_cls_head(x, classes=5)"))
    labels = torch.randint(0, 5, (2, 8))
    labels[0, :3] = -100
    res = tag(ids, labels=labels)
    ref = F.cross_entropy(res.logits.reshape(-1, 5), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(res.loss, ref)
