"""Config → spec, per family: what each Hugging Face `model_type` is in archc's language
(`FAMILIES`, model_type → its rule). The transformer decoders share one rule (`decoders.py`);
GPT-2 and the Mamba family have theirs here. What a rule returns is `plan.py`'s `ImportPlan`.
"""

from __future__ import annotations

from collections.abc import Callable

from archc.hf.config import Fields, HFImportError
from archc.hf.decoders import ARCH, decoder_family
from archc.hf.plan import ImportPlan, Source
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
        limit = f.get("time_step_limit", [0.0, float("inf")])
        # transformers writes non-finite floats as {"__float__": "Infinity"}
        limit = [float(v["__float__"]) if isinstance(v, dict) and "__float__" in v else v for v in limit] \
            if isinstance(limit, list) else limit
        if limit != [0.0, float("inf")]:
            raise HFImportError(f"`time_step_limit` is {limit!r}: archc's Mamba-2 does not clamp Δ; it imports "
                                "[0.0, inf]", field="time_step_limit")


def mamba_family(family: str, f: Fields) -> ImportPlan:
    """Mamba and Mamba-2: pre-norm residual blocks of RMSNorm → the mixer (mamba_ssm's names, as
    transformers keeps them under `backbone.layers.{i}.mixer`), a final RMSNorm, tied or untied
    head."""
    vocab, d, layers = f.int("vocab_size"), f.int("hidden_size"), f.int("num_hidden_layers")
    state, expand, conv = f.int("state_size"), f.int("expand"), f.int("conv_kernel")
    eps = f.number("layer_norm_epsilon", 1e-5)
    f.only("hidden_act", ("silu",), "silu")
    bias, conv_bias = f.flag("use_bias", False), f.flag("use_conv_bias", True)
    tied = f.flag("tie_word_embeddings", family == "mamba")
    inner = f.int("intermediate_size", expand * d)
    if inner != expand * d:
        raise HFImportError(f"`intermediate_size` is {inner}, not expand·hidden_size = {expand * d}",
                            field="intermediate_size")
    _ssm_time_step(f, family)
    args = [f"rmsnorm(x, eps={_number(eps)})", f"d_state={state}", f"expand={expand}", f"d_conv={conv}"]
    if family == "mamba":
        rank = f.get("time_step_rank", "auto")
        if rank != "auto":
            rank = f.int("time_step_rank")
            if rank != -(-d // 16):
                args.append(f"dt_rank={rank}")
        op = "mamba"
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


#: model_type → its rule
FAMILIES: dict[str, Callable[[Fields], ImportPlan]] = {
    **{name: (lambda f, name=name: decoder_family(name, f)) for name in ARCH},
    **{name: (lambda f, name=name: mamba_family(name, f)) for name in ("mamba", "mamba2")},
    "gpt2": lambda f: gpt2_family("gpt2", f),
}
