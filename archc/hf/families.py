"""Config → spec, per family: what each Hugging Face `model_type` is in archc's language
(`FAMILIES`, model_type → its rule). The transformer decoders share one rule (`decoders.py`);
GPT-2 and the Mamba family have theirs here. What a rule returns is `plan.py`'s `ImportPlan`.
"""

from __future__ import annotations

from collections.abc import Callable

from archc.hf.config import Fields, HFImportError
from archc.hf.decoders import ARCH, decoder_family
from archc.hf.hybrids import hybrid_family, qwen3_next_family
from archc.hf.plan import (
    ImportPlan,
    Source,
    format_spec,
    model_text,
    rope_sets,
    rope_text,
    unclamped_time_step,
)
from archc.hf.plan import number as _number

__all__ = ["ARCH", "FAMILIES", "ImportPlan", "Source"]


def _ssm_time_step(f: Fields, family: str) -> None:
    """The Δ settings that shape the function: `time_step_rank` (read by the rule), and for
    Mamba-2 a clamp of Δ, which archc does not apply (only the unbounded default is imported).
    `time_step_min/max/floor/init_scheme/scale` set Δ's initialization only."""
    for name in ("time_step_min", "time_step_max", "time_step_floor", "time_step_init_scheme", "time_step_scale",
                 "rescale_prenorm_residual", "use_mambapy", "use_associative_scan", "residual_in_fp32"):
        f.get(name)  # initialization, or the kernel transformers picks: the same function in fp32
    if family == "mamba2":
        unclamped_time_step(f)


def mamba_family(family: str, f: Fields) -> ImportPlan:
    """Mamba, FalconMamba (Mamba with Δ's input, B and C RMS-normalized) and Mamba-2: pre-norm
    residual blocks of RMSNorm → the mixer (mamba_ssm's names, as transformers keeps them under
    `backbone.layers.{i}.mixer`), a final RMSNorm, tied or untied head."""
    vocab, d, layers = f.int("vocab_size"), f.int("hidden_size"), f.int("num_hidden_layers")
    state, expand, conv = f.int("state_size"), f.int("expand"), f.int("conv_kernel")
    eps = f.number("layer_norm_epsilon", 1e-5)
    f.only("hidden_act", ("silu",), "silu")
    bias, conv_bias = f.flag("use_bias", False), f.flag("use_conv_bias", True)
    tied = f.flag("tie_word_embeddings", family in ("mamba", "falcon_mamba"))
    inner = f.int("intermediate_size", expand * d)
    if inner != expand * d:
        raise HFImportError(f"`intermediate_size` is {inner}, not expand·hidden_size = {expand * d}",
                            field="intermediate_size")
    _ssm_time_step(f, family)
    args = [f"rmsnorm(x, eps={_number(eps)})", f"d_state={state}", f"expand={expand}", f"d_conv={conv}"]
    if family in ("mamba", "falcon_mamba"):
        rank = f.get("time_step_rank", "auto")
        if rank != "auto":
            rank = f.int("time_step_rank")
            if rank != -(-d // 16):
                args.append(f"dt_rank={rank}")
        op = "mamba"
        if family == "falcon_mamba":  # Δ's input, B and C RMS-normalized (without weights) after x_proj
            args.append("norm_dt_bc=true")
            mixer_eps = f.number("mixer_rms_eps", 1e-6)
            if mixer_eps != 1e-6:
                args.append(f"norm_eps={_number(mixer_eps)}")
    else:
        from archc.backends.torch.ops.mamba2 import NORM_EPS

        head_dim, groups = f.int("head_dim"), f.int("n_groups", 1)
        heads = f.int("num_heads")
        if heads * head_dim != inner:
            raise HFImportError(f"`num_heads` × `head_dim` is {heads} × {head_dim}, not the inner width {inner}",
                                field="num_heads")
        if eps != NORM_EPS:
            raise HFImportError(f"`layer_norm_epsilon` is {eps}: archc's Mamba-2 gated norm uses {NORM_EPS}",
                                field="layer_norm_epsilon")
        f.get("time_step_rank")  # Mamba-2 has no Δ projection: Δ is a slice of in_proj
        args += [f"head_dim={head_dim}", f"groups={groups}", f"chunk={f.int('chunk_size', 256)}"]
        op = "mamba2"
    if not conv_bias:
        args.append("conv_bias=false")
    if bias:
        args.append("bias=true")
    spec = f"""# {family} imported from a Hugging Face config by `archc import-hf` (docs/hf.md).
model {family}(tokens) {{
  vocab = {vocab}
  d = {d}
  layers = {layers}

  block layer(x) {{
    return x + {op}({", ".join(args)})
  }}

  x = embed(tokens, vocab, d)
  x = repeat(layers, layer)(x)
  return lm_head(rmsnorm(x, eps={_number(eps)}), tied={"true" if tied else "false"})
}}
"""
    modules = {"embed": "backbone.embeddings", "layers.{i}": "backbone.layers.{i}", "norm": "backbone.norm_f"}
    if not tied:
        modules["lm_head"] = "lm_head"
    return ImportPlan(family, spec, modules, layers, skip=("lm_head.weight",) if tied else ())


def rwkv_family(f: Fields) -> ImportPlan:
    """RWKV-4 (transformers' `RwkvForCausalLM`): the embedding's LayerNorm (`blocks.0.pre_ln`),
    pre-norm blocks of LayerNorm → time-mix (WKV) → LayerNorm → channel-mix, a final LayerNorm,
    a head. archc's weights carry transformers' names inside each block (`attention`,
    `feed_forward`, their `time_*` parameters): only the norms are renamed."""
    vocab, d, layers = f.int("vocab_size"), f.int("hidden_size"), f.int("num_hidden_layers")
    attention = f.int("attention_hidden_size", d)
    hidden = f.int("intermediate_size", 4 * d)
    eps = f.number("layer_norm_epsilon", 1e-5)
    tied = f.flag("tie_word_embeddings", False)
    # transformers' eval mode halves the residual stream every `rescale_every` layers (and the
    # weights writing into it) so that fp16 does not overflow: the trained function, which its
    # train mode computes, up to LayerNorm's ε (3e-4 of the logits at width 64, measured); archc
    # imports the trained function, and export-hf writes 0 (no rescaling)
    f.get("rescale_every")
    f.get("context_length")  # the training context; RWKV's recurrence has no window
    at = "" if eps == 1e-5 else f", eps={_number(eps)}"
    width = "" if attention == d else f", hidden={attention}"
    spec = f"""# rwkv imported from a Hugging Face config by `archc import-hf` (docs/hf.md).
model rwkv(tokens) {{
  vocab = {vocab}
  d = {d}
  layers = {layers}

  block layer(x) {{
    x = x + rwkv_time_mix(layernorm(x{at}), version=4{width})
    return x + rwkv_channel_mix(layernorm(x{at}), hidden={hidden})
  }}

  x = embed(tokens, vocab, d)
  x = layernorm(x{at}, name="pre_ln")
  x = repeat(layers, layer, name="blocks")(x)
  return lm_head(layernorm(x{at}, name="ln_out"), tied={"true" if tied else "false"})
}}
"""
    modules = {"embed": "rwkv.embeddings", "pre_ln": "rwkv.blocks.0.pre_ln", "blocks.{i}.norm": "rwkv.blocks.{i}.ln1",
               "blocks.{i}.attention": "rwkv.blocks.{i}.attention", "blocks.{i}.norm_1": "rwkv.blocks.{i}.ln2",
               "blocks.{i}.feed_forward": "rwkv.blocks.{i}.feed_forward", "ln_out": "rwkv.ln_out"}
    if not tied:
        modules["lm_head"] = "head"
    return ImportPlan("rwkv", spec, modules, layers, skip=("head.weight",) if tied else ())


def gpt2_family(family: str, f: Fields) -> ImportPlan:
    """GPT-2: learned positions, pre-norm blocks of LayerNorm → MHA with biases → LayerNorm →
    an MLP with GELU (tanh, `gelu_new`), a tied head. Its `Conv1D` weights are stored [in, out]
    and q/k/v fused in `c_attn`: transposed and sliced on the way in (`Source`)."""
    vocab, d, layers, heads = f.int("vocab_size"), f.int("n_embd"), f.int("n_layer"), f.int("n_head")
    positions = f.int("n_positions")
    hidden = f.int("n_inner", 4 * d)
    act = f.only("activation_function", ("gelu_new", "gelu_pytorch_tanh", "gelu"), "gelu_new")
    eps = f.number("layer_norm_epsilon", 1e-5)
    f.only("scale_attn_weights", (True,), True, ": scores scaled by 1/√head_dim")
    f.only("scale_attn_by_inverse_layer_idx", (False,), False)
    f.only("reorder_and_upcast_attn", (False,), False)
    f.only("tie_word_embeddings", (True,), True)
    for name in ("summary_type", "summary_use_proj", "summary_activation", "summary_proj_to_labels",
                 "summary_first_dropout", "attn_pdrop", "n_ctx"):
        f.get(name)  # the sequence-summary head and dropout: not the language model's function
    spec = f"""# {family} imported from a Hugging Face config by `archc import-hf` (docs/hf.md).
model {family}(tokens) {{
  vocab = {vocab}
  d = {d}
  layers = {layers}
  heads = {heads}

  block layer(x) {{
    x = x + attention(layernorm(x, eps={_number(eps)}), heads=heads, causal=true, bias=true)
    return x + mlp(layernorm(x, eps={_number(eps)}), hidden={hidden}, act="{'gelu' if act == 'gelu' else 'gelu_tanh'}")
  }}

  x = embed(tokens, vocab, d)
  x = learned_pos(x, max_len={positions})
  x = repeat(layers, layer, name="h")(x)
  return lm_head(layernorm(x, eps={_number(eps)}), tied=true)
}}
"""
    p = "transformer.h.{i}."
    sources = {}
    for j, n in enumerate("qkv"):
        rows = (j * d, (j + 1) * d)
        sources[f"h.{{i}}.attn.{n}_proj.weight"] = Source(p + "attn.c_attn.weight", True, rows)
        sources[f"h.{{i}}.attn.{n}_proj.bias"] = Source(p + "attn.c_attn.bias", False, rows)
    for ours, theirs in (("attn.o_proj", "attn.c_proj"), ("mlp.up_proj", "mlp.c_fc"), ("mlp.down_proj", "mlp.c_proj")):
        sources[f"h.{{i}}.{ours}.weight"] = Source(p + theirs + ".weight", True)
    modules = {"embed": "transformer.wte", "pos_embed": "transformer.wpe", "h.{i}.norm": p + "ln_1",
               "h.{i}.norm_1": p + "ln_2", "h.{i}.attn.o_proj": p + "attn.c_proj", "h.{i}.mlp.up_proj": p + "mlp.c_fc",
               "h.{i}.mlp.down_proj": p + "mlp.c_proj", "norm": "transformer.ln_f"}
    return ImportPlan(family, spec, modules, layers, skip=("lm_head.weight", ".attn.bias", ".attn.masked_bias"),
                      sources=sources)


#: GELU variants transformers' `ACT2FN` names → archc's `mlp(act=)`
_MLP_ACT = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
            "relu": "relu", "silu": "silu"}


def neox_family(family: str, f: Fields) -> ImportPlan:
    """GPT-NeoX (Pythia) and StableLM: LayerNorms with biases, partial rotary attention (a quarter
    of each head by default), the attention and the FFN in parallel on the residual stream with
    `use_parallel_residual` (`x + attention(ln1(x)) + mlp(ln2(x))`; StableLM's both read one
    norm). GPT-NeoX keeps q, k and v interleaved per head in `query_key_value` ([heads, 3, hd]
    rows): each is read as every third block of head_dim rows (`Source.period`); its FFN is an
    MLP with biases, StableLM's SwiGLU."""
    vocab, d, layers, heads = f.int("vocab_size"), f.int("hidden_size"), f.int("num_hidden_layers"), \
        f.int("num_attention_heads")
    ffn = f.int("intermediate_size")
    eps = f.number("layer_norm_eps", 1e-5)
    neox = family == "gpt_neox"
    parallel = f.flag("use_parallel_residual", neox)
    tied = f.flag("tie_word_embeddings", False)
    kv = heads if neox else f.int("num_key_value_heads", heads)
    params = rope_sets(f)["full_attention"]
    base = f.get("rotary_emb_base")  # GPT-NeoX's name for the rope base before transformers 5
    if base is not None and "rope_theta" not in (f.cfg.get("rope_parameters") or {}):
        params = {**params, "rope_theta": base}
    fraction = f.number("rotary_pct", f.number("partial_rotary_factor", 0.25))
    norm = f"layernorm(x, eps={_number(eps)})"
    attn = ["heads=heads"] + (["kv_heads=kv_heads"] if kv != heads else [])
    if neox:
        bias = f.flag("attention_bias", True)
        attn += ["bias=true"] if bias else []
        act = f.only("hidden_act", tuple(_MLP_ACT), "gelu")
        mlp = f'mlp({{h}}, hidden=ffn, act="{_MLP_ACT[act]}")'
    else:
        f.only("hidden_act", ("silu",), "silu", ": SwiGLU's gate")
        if f.flag("use_qkv_bias", False):
            attn += ["bias=true", "out_bias=false"]
        if f.flag("qk_layernorm", False):
            raise HFImportError("`qk_layernorm` is true: StableLM's per-head LayerNorms have a weight per head, "
                                "archc's q/k norms one shared by the heads", field="qk_layernorm")
        mlp = "swiglu({h}, hidden=ffn)"
    attn += ["causal=true", f"pos={rope_text(params, fraction)}"]
    attention = "attention({x}, " + ", ".join(attn) + ")"
    if parallel and neox:
        body = f"return x + {attention.format(x=norm)} + {mlp.format(h=norm)}"
    elif parallel:
        body = f"h = {norm}\n    return x + {attention.format(x='h')} + {mlp.format(h='h')}"
    else:
        body = f"x = x + {attention.format(x=norm)}\n    return x + {mlp.format(h=norm)}"
    consts = [f"vocab = {vocab}", f"d = {d}", f"layers = {layers}", f"heads = {heads}"] + \
        ([f"kv_heads = {kv}"] if kv != heads else []) + [f"ffn = {ffn}"]
    spec = model_text(family, consts, [("layer(x)", body)], "embed(tokens, vocab, d)", "repeat(layers, layer)",
                      f"{norm}, tied={'true' if tied else 'false'}")
    sources: dict[str, Source | tuple[Source, ...]] = {}
    if neox:
        p = "gpt_neox.layers.{i}."
        hd = d // heads
        modules = {"embed": "gpt_neox.embed_in", "layers.{i}.norm": p + "input_layernorm",
                   "layers.{i}.norm_1": p + "post_attention_layernorm", "layers.{i}.attn.o_proj": p + "attention.dense",
                   "layers.{i}.mlp.up_proj": p + "mlp.dense_h_to_4h", "layers.{i}.mlp.down_proj": p + "mlp.dense_4h_to_h",
                   "norm": "gpt_neox.final_layer_norm", "lm_head": "embed_out"}
        for j, n in enumerate("qkv"):
            for kind in ("weight",) + (("bias",) if bias else ()):
                sources[f"layers.{{i}}.attn.{n}_proj.{kind}"] = Source(
                    p + f"attention.query_key_value.{kind}", rows=(j * hd, (j + 1) * hd), period=3 * hd)
        skip = (".attention.bias", ".attention.masked_bias", "rotary_emb.inv_freq")
    else:
        p = "model.layers.{i}."
        modules = {"embed": "model.embed_tokens", "layers.{i}.norm": p + "input_layernorm",
                   "layers.{i}.norm_1": p + "post_attention_layernorm", "layers.{i}.attn": p + "self_attn",
                   "layers.{i}.mlp": p + "mlp", "norm": "model.norm", "lm_head": "lm_head"}
        skip = ("rotary_emb.inv_freq",)
    if tied:
        del modules["lm_head"]
        skip += ("embed_out.weight", "lm_head.weight")
    return ImportPlan(family, spec, modules, layers, skip=skip, sources=sources)


#: BERT's heads archc imports, by `architectures` name
BERT_HEADS = ("BertForSequenceClassification", "BertForMaskedLM")


def bert_family(family: str, f: Fields) -> ImportPlan:
    """BERT: word, position and token-type embeddings and a LayerNorm, post-norm encoder layers
    (LayerNorm after each residual add), bidirectional MHA with biases, a GELU MLP, and one of two
    heads, as `architectures` names it: `BertForSequenceClassification` (the [CLS] pooler, dense +
    tanh, and the classifier) or `BertForMaskedLM` (the prediction head: dense, the activation, a
    LayerNorm, then logits over the vocabulary tied to the word embeddings, with a bias — an
    `lm_head` on a bidirectional model, whose loss archc computes on unshifted labels, masked-LM
    style). Other heads (pre-training's next-sentence head, the bare encoder) are refused by name."""
    heads_known = f.get("architectures") or ["BertForSequenceClassification"]
    head = heads_known[0] if isinstance(heads_known, list) and heads_known else heads_known
    if head not in BERT_HEADS:
        raise HFImportError(f"`architectures` is {heads_known!r}: archc imports BERT with the head of "
                            f"{' or '.join(BERT_HEADS)}", "a BertForPreTraining checkpoint's encoder and "
                            "masked-LM head load as BertForMaskedLM: save it as one", field="architectures")
    vocab, d, layers, heads = f.int("vocab_size"), f.int("hidden_size"), f.int("num_hidden_layers"), \
        f.int("num_attention_heads")
    ffn, positions, types = f.int("intermediate_size"), f.int("max_position_embeddings", 512), f.int("type_vocab_size", 2)
    eps = f.number("layer_norm_eps", 1e-12)
    act = f.only("hidden_act", ("gelu", "gelu_new", "relu") if head != "BertForMaskedLM" else ("gelu", "relu"),
                 "gelu", ": the masked-LM head's transform applies it too" if head == "BertForMaskedLM" else "")
    f.only("position_embedding_type", ("absolute",), "absolute")
    f.only("is_decoder", (False,), False, ": BERT as a bidirectional encoder")
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "label2id", "num_labels",
                 "classifier_dropout"):
        f.get(name)  # dropout and label names: not the function
    p = "bert.encoder.layer.{i}."
    modules = {"embed": "bert.embeddings.word_embeddings", "pos_embed": "bert.embeddings.position_embeddings",
               "norm": "bert.embeddings.LayerNorm", "encoder.{i}.attn.q_proj": p + "attention.self.query",
               "encoder.{i}.attn.k_proj": p + "attention.self.key", "encoder.{i}.attn.v_proj": p + "attention.self.value",
               "encoder.{i}.attn.o_proj": p + "attention.output.dense", "encoder.{i}.norm": p + "attention.output.LayerNorm",
               "encoder.{i}.mlp.up_proj": p + "intermediate.dense", "encoder.{i}.mlp.down_proj": p + "output.dense",
               "encoder.{i}.norm_1": p + "output.LayerNorm"}
    sources: dict[str, Source | tuple[Source, ...]] = {
        "embed.token_type.weight": Source("bert.embeddings.token_type_embeddings.weight")}
    skip = ("position_ids", "token_type_ids")
    if head == "BertForMaskedLM":
        tied = f.flag("tie_word_embeddings", True)
        output = (f'h = layernorm({act}(linear(x, out=d, name="transform")), eps=eps, name="transform_norm")\n'
                  f"  return lm_head(h, tied={'true' if tied else 'false'}, bias=true)")
        modules.update({"transform.proj": "cls.predictions.transform.dense",
                        "transform_norm": "cls.predictions.transform.LayerNorm"})
        if tied:  # the decoder's weight is the word embeddings', its bias `cls.predictions.bias`
            sources["lm_head.bias"] = Source("cls.predictions.bias")
            skip += ("cls.predictions.decoder.bias", "cls.predictions.decoder.weight")
        else:  # untied, transformers ties neither: the decoder's own bias is read, `bias` is not
            sources["lm_head.weight"] = Source("cls.predictions.decoder.weight")
            sources["lm_head.bias"] = Source("cls.predictions.decoder.bias")
            skip += ("cls.predictions.bias",)
    else:
        f.get("tie_word_embeddings")  # the masked-LM head's tie: not this head's
        labels = f.get("id2label") or {}
        classes = len(labels) if isinstance(labels, dict) and labels else f.int("num_labels", 2)
        output = f'return cls_head(x, classes={classes}, pool="cls", pooler=true)'
        modules.update({"classifier.pooler": "bert.pooler.dense", "classifier.classifier": "classifier"})
    spec = format_spec(f"""# {family} imported from a Hugging Face config ({head}) by `archc import-hf` (docs/hf.md).
model {family}(tokens) {{
  vocab = {vocab}
  d = {d}
  layers = {layers}
  heads = {heads}
  eps = {_number(eps)}

  block encoder(x) {{
    x = layernorm(x + attention(x, heads=heads, bias=true), eps=eps)
    return layernorm(x + mlp(x, hidden={ffn}, act="{_MLP_ACT[act]}"), eps=eps)
  }}

  x = embed(tokens, vocab, d, token_types={types})
  x = learned_pos(x, max_len={positions})
  x = layernorm(x, eps=eps)
  x = repeat(layers, encoder, name="encoder")(x)
  {output}
}}
""")
    return ImportPlan(family, spec, modules, layers, skip=skip, sources=sources)


#: model_type → its rule
FAMILIES: dict[str, Callable[[Fields], ImportPlan]] = {
    **{name: (lambda f, name=name: decoder_family(name, f)) for name in ARCH},
    **{name: (lambda f, name=name: mamba_family(name, f)) for name in ("mamba", "mamba2", "falcon_mamba")},
    "gpt2": lambda f: gpt2_family("gpt2", f),
    **{name: (lambda f, name=name: neox_family(name, f)) for name in ("gpt_neox", "stablelm")},
    **{name: (lambda f, name=name: hybrid_family(name, f)) for name in ("jamba", "bamba")},
    "qwen3_next": qwen3_next_family,
    "rwkv": rwkv_family,
    "bert": lambda f: bert_family("bert", f),
}
