"""Config → spec, per family: what each Hugging Face `model_type` is in archc's language, and
where each archc node's weights live in the checkpoint.

A family rule reads its config through `Fields` and returns an `ImportPlan`: the spec text
(formatted, with the widths as named constants) and, for each archc node that holds weights, the
checkpoint module it comes from (`layers.{i}.attn` ← `model.layers.{i}.self_attn`). archc's ops
name their weights as transformers' modules do (`q_proj.weight`, `gate_proj.weight`, a norm's
`weight`), so the node → module table is the whole name map; the importer checks it against the
spec's declared weights, both ways, before it writes anything.

Families so far: the Llama family (llama, mistral, mixtral, olmo, phi3, qwen2, qwen3), GPT-2 and the Mamba family (mamba,
mamba2) — the rest of issue #23's list is docs/hf.md's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from archc.hf.config import Fields, HFImportError


@dataclass(frozen=True)
class Source:
    """A checkpoint tensor that is not an archc weight as it stands: `name`, transposed (GPT-2's
    `Conv1D` stores [in, out]) and/or rows `rows` of it (after the transpose: one of q, k, v in a
    fused `c_attn`). The rows are read through `get_slice`, not the whole tensor."""

    name: str
    transpose: bool = False
    rows: tuple[int, int] | None = None
    #: an index into the first axis, taken before the rest (expert e of transformers 5's stacked
    #: `experts.gate_up_proj` [E, 2·F, d])
    index: int | None = None

    def at(self, i: int) -> Source:
        """This source with `{i}` in its name written out as layer i."""
        return Source(self.name.format(i=i), self.transpose, self.rows, self.index)


@dataclass(frozen=True)
class ImportPlan:
    family: str
    spec: str
    #: archc node id pattern (`{i}` the layer) → the checkpoint's module prefix
    modules: dict[str, str]
    layers: int
    #: checkpoint tensors that are not weights of the function (rotary `inv_freq` buffers)
    skip: tuple[str, ...] = ()
    #: archc keys (`{i}` the layer) whose tensor is a `Source`, not a renamed checkpoint tensor;
    #: several Sources are the layouts different writers used (the first the checkpoint has wins)
    sources: dict[str, Source | tuple[Source, ...]] = field(default_factory=dict)


def _number(x: float) -> str:
    """A float as the spec writes it: 10000.0 → 10000, 1e-06 → 1e-6."""
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    text = repr(float(x))
    return text.replace("e-0", "e-").replace("e+0", "e")


def _rope(f: Fields) -> str:
    """`rope(...)` from `rope_parameters` (transformers ≥ 5) or `rope_theta` + `rope_scaling`;
    scaling types archc does not compute are refused by name."""
    params = f.get("rope_parameters") or {}
    scaling = f.get("rope_scaling") or {}
    if not isinstance(params, dict) or not isinstance(scaling, dict):
        raise HFImportError("`rope_parameters` / `rope_scaling` is not an object", field="rope_parameters")
    merged = {**scaling, **params}
    theta = merged.get("rope_theta", f.get("rope_theta", 10000.0))
    kind = merged.get("rope_type", merged.get("type", "default"))
    args = [f"theta={_number(theta)}"]
    if kind == "linear":
        args += ['scaling="linear"', f"factor={_number(merged['factor'])}"]
    elif kind != "default":
        raise HFImportError(f"`rope_parameters` asks for rope scaling `{kind}` ({merged}), which archc does not "
                            "compute; archc imports default and linear", "yarn, llama3, dynamic and longrope scaling are later work (docs/hf.md)",
                            field="rope_parameters")
    if float(merged.get("partial_rotary_factor", f.get("partial_rotary_factor", 1.0))) != 1.0:
        args.append(f"fraction={_number(merged.get('partial_rotary_factor', f.get('partial_rotary_factor')))}")
    return f"rope({', '.join(args)})"


def _window(f: Fields, family: str, layers: int) -> int | None:
    """The sliding window every layer uses, or None; a mix of windowed and full layers is refused."""
    window = f.get("sliding_window")
    if family in ("qwen2", "qwen3") and not f.flag("use_sliding_window", False):
        window = None
    kinds = f.get("layer_types")
    if kinds is not None:
        if not isinstance(kinds, list) or len(kinds) != layers:
            raise HFImportError(f"`layer_types` is {kinds!r}: one entry per layer was expected", field="layer_types")
        if set(kinds) == {"full_attention"}:
            return None
        if set(kinds) != {"sliding_attention"}:
            raise HFImportError(f"`layer_types` mixes {sorted(set(kinds))}: per-layer windows are not imported yet",
                                "docs/hf.md lists what is next", field="layer_types")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window <= 0):
        raise HFImportError(f"`sliding_window` is {window!r}: a positive integer was expected", field="sliding_window")
    return window


def llama_family(family: str, f: Fields) -> ImportPlan:
    """Llama, Mistral, Mixtral, OLMo, Phi-3, Qwen2, Qwen3: pre-norm decoder blocks of RMSNorm (OLMo: a
    LayerNorm without parameters) → GQA with RoPE
    (q/k/v biases with `attention_bias`, Qwen2's always; Qwen3's per-head q/k RMSNorms) → RMSNorm →
    SwiGLU (Phi-3 stores q/k/v and gate/up fused: rows of each; Mixtral: a top-k mixture of SwiGLU experts, read from transformers 5's stacked
    `experts.gate_up_proj` / `down_proj` or the older per-expert `w1`/`w3`/`w2`), tied or untied
    head."""
    vocab, d, layers = f.int("vocab_size"), f.int("hidden_size"), f.int("num_hidden_layers")
    heads = f.int("num_attention_heads")
    kv = f.int("num_key_value_heads", heads)
    ffn = f.int("intermediate_size")
    head_dim = f.int("head_dim", d // heads)
    f.only("hidden_act", ("silu",), "silu", ": SwiGLU's gate")
    if family != "mixtral":
        f.only("mlp_bias", (False,), False)
    if family == "olmo":  # OLMo's LayerNorm has no parameters and a fixed ε of 1e-5
        eps = 1e-5
        norm = "layernorm(x, affine=false)"
        clip = f.get("clip_qkv")
        if clip is not None:
            raise HFImportError(f"`clip_qkv` is {clip!r}: archc does not clamp q, k and v; it imports null",
                                field="clip_qkv")
    else:
        eps = f.number("rms_norm_eps", 1e-6)
        norm = f"rmsnorm(x, eps={_number(eps)})"
    tied = f.flag("tie_word_embeddings", family not in ("qwen2", "qwen3"))
    qkv_bias = True if family == "qwen2" else f.flag("attention_bias", False)
    window = _window(f, family, layers)
    attn = [norm, "heads=heads"]
    if kv != heads:
        attn.append("kv_heads=kv_heads")
    if head_dim != d // heads:
        attn.append(f"head_dim={head_dim}")
    if qkv_bias:
        attn += ["bias=true", "out_bias=false"] if family == "qwen2" else ["bias=true"]
    attn.append("causal=true")
    if family == "qwen3":  # the q/k norms are RMSNorms with the model's ε
        attn += ["qk_norm=true"] + ([f"qk_norm_eps={_number(eps)}"] if eps != 1e-6 else [])
    if window:
        attn.append(f"window={window}")
    attn.append(f"pos={_rope(f)}")
    consts = [f"vocab = {vocab}", f"d = {d}", f"layers = {layers}", f"heads = {heads}"]
    if kv != heads:
        consts.append(f"kv_heads = {kv}")
    consts.append(f"ffn = {ffn}")
    body = ",\n      ".join(attn)
    ffn_text = f"swiglu({norm}, hidden=ffn)"
    sources: dict[str, Source | tuple[Source, ...]] = {}
    if family == "mixtral":
        experts, top_k = f.int("num_local_experts"), f.int("num_experts_per_tok")
        aux = f.number("router_aux_loss_coef", 0.001)
        f.get("output_router_logits")  # whether transformers adds the aux loss: archc's `aux_loss` trains with it
        jitter = f.number("router_jitter_noise", 0.0)
        if jitter:
            raise HFImportError(f"`router_jitter_noise` is {jitter}: Mixtral scales the experts' input too, archc's "
                                "`jitter` only the router's", field="router_jitter_noise")
        consts += [f"experts = {experts}"]
        ffn_text = (f"moe(\n      {norm},\n      experts=experts,\n      top_k={top_k},\n"
                    f"      expert=swiglu(hidden=ffn),\n      aux_loss={_number(aux)},\n    )")
        p = "model.layers.{i}."
        sources["layers.{i}.moe.router.weight"] = (Source(p + "mlp.gate.weight"),
                                                   Source(p + "block_sparse_moe.gate.weight"))
        for e in range(experts):
            old = p + f"block_sparse_moe.experts.{e}."
            sources[f"layers.{{i}}.moe.experts.{e}.gate_proj.weight"] = (
                Source(p + "mlp.experts.gate_up_proj", rows=(0, ffn), index=e), Source(old + "w1.weight"))
            sources[f"layers.{{i}}.moe.experts.{e}.up_proj.weight"] = (
                Source(p + "mlp.experts.gate_up_proj", rows=(ffn, 2 * ffn), index=e), Source(old + "w3.weight"))
            sources[f"layers.{{i}}.moe.experts.{e}.down_proj.weight"] = (
                Source(p + "mlp.experts.down_proj", index=e), Source(old + "w2.weight"))
    constants = "\n".join(f"  {c}" for c in consts)
    spec = f"""# {family} imported from a Hugging Face config by `archc import-hf` (docs/hf.md).
model {family}(tokens) {{
{constants}

  block decoder(x) {{
    x = x + attention(
      {body},
    )
    return x + {ffn_text}
  }}

  x = embed(tokens, vocab, d)
  x = repeat(layers, decoder)(x)
  return lm_head({norm}, tied={"true" if tied else "false"})
}}
"""
    if family == "phi3":  # q, k, v fused in `qkv_proj`, gate and up in `gate_up_proj`: rows of each
        f.get("original_max_position_embeddings")  # read by longrope scaling only, which is refused
        p = "model.layers.{i}."
        q, k = heads * head_dim, kv * head_dim
        for name, rows in (("q_proj", (0, q)), ("k_proj", (q, q + k)), ("v_proj", (q + k, q + 2 * k))):
            sources[f"layers.{{i}}.attn.{name}.weight"] = Source(p + "self_attn.qkv_proj.weight", rows=rows)
        for name, rows in (("gate_proj", (0, ffn)), ("up_proj", (ffn, 2 * ffn))):
            sources[f"layers.{{i}}.mlp.{name}.weight"] = Source(p + "mlp.gate_up_proj.weight", rows=rows)
    modules = {"embed": "model.embed_tokens", "layers.{i}.norm": "model.layers.{i}.input_layernorm",
               "layers.{i}.attn": "model.layers.{i}.self_attn",
               "layers.{i}.norm_1": "model.layers.{i}.post_attention_layernorm",
               "layers.{i}.mlp": "model.layers.{i}.mlp", "norm": "model.norm"}
    if not tied:
        modules["lm_head"] = "lm_head"
    return ImportPlan(family, spec, modules, layers, skip=("rotary_emb.inv_freq", "lm_head.weight") if tied else
                      ("rotary_emb.inv_freq",), sources=sources)


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
    **{name: (lambda f, name=name: llama_family(name, f)) for name in ("llama", "mistral", "mixtral", "olmo",
                                                                            "phi3", "qwen2", "qwen3")},
    **{name: (lambda f, name=name: mamba_family(name, f)) for name in ("mamba", "mamba2")},
    "gpt2": lambda f: gpt2_family("gpt2", f),
}
