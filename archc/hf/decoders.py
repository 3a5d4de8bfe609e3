"""The transformer decoder families: one rule for every Llama-like `model_type`.

They share a layer — a norm, grouped-query attention with RoPE, a norm, a gated FFN (or a
mixture of gated experts) — and differ in a few settings each, which this rule reads from the
config and writes as the spec's own settings:

* where the norms stand: before each sublayer (Llama), after it (OLMo 2), or both (Gemma 2/3's
  four norms per layer); RMSNorm, Gemma's RMSNorm scaled by 1 + weight, or OLMo's LayerNorm
  without parameters;
* the attention: q/k/v biases (Qwen2), q/k norms per head (Qwen3, Gemma 3) or over the width
  (OLMo 2), a score scale (Gemma 2/3's `query_pre_attn_scalar`, Granite's
  `attention_multiplier`), score soft-capping (Gemma 2), sliding windows on every layer
  (Mistral) or on some (Gemma 2/3, Qwen2's `layer_types`), with their own rope (Gemma 3);
* the FFN: SwiGLU, GeGLU (Gemma), a top-k mixture of SwiGLU experts (Mixtral, Qwen MoE) with
  Qwen2-MoE's sigmoid-gated shared expert, MoE on some layers only (`decoder_sparse_step`,
  `mlp_only_layers`);
* constants: Gemma's √d embedding scale, Granite's embedding / residual / logit multipliers,
  Gemma 2's final logit soft-capping.

Layers that differ (window, rope, dense or MoE) become a `pattern` of blocks: settings of one
block (`decoder(window=4096)`) where only the attention's settings differ, blocks of their own
where the FFN does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from archc.hf.config import Fields, HFImportError
from archc.hf.plan import ImportPlan, Source, model_text, number, rope_sets, rope_text, stack_text

GEMMA = ("gemma", "gemma2", "gemma3_text")
MOE = ("mixtral", "qwen2_moe", "qwen3_moe")
#: the published families written as transformers' `XForCausalLM`
ARCH = {"llama": "Llama", "mistral": "Mistral", "mixtral": "Mixtral", "olmo": "Olmo", "olmo2": "Olmo2",
        "phi3": "Phi3", "qwen2": "Qwen2", "qwen3": "Qwen3", "qwen2_moe": "Qwen2Moe", "qwen3_moe": "Qwen3Moe",
        "granite": "Granite", "gemma": "Gemma", "gemma2": "Gemma2", "gemma3_text": "Gemma3"}


#: families whose transformers model reads `layer_types` (the others window every layer alike)
PER_LAYER = ("qwen2", "qwen3", "qwen2_moe", "gemma2", "gemma3_text")


def _layer_types(f: Fields, family: str, layers: int) -> list[str]:
    """Each layer's attention kind, `full_attention` or `sliding_attention`, as transformers'
    config computes it: `layer_types` where the family reads it, else its default schedule."""
    window = f.get("sliding_window")
    kinds = f.get("layer_types")
    if family == "gemma3_text":  # what `layer_types` is made from (it wins where given)
        f.get("sliding_window_pattern"), f.get("_sliding_window_pattern")
    qwen = family in ("qwen2", "qwen3", "qwen2_moe", "qwen3_moe")
    if qwen:
        top = f.get("max_window_layers", 28) if family != "qwen3_moe" else 0
        if isinstance(top, bool) or not isinstance(top, int) or top < 0:
            raise HFImportError(f"`max_window_layers` is {top!r}: a layer count was expected", field="max_window_layers")
        if not f.flag("use_sliding_window", False):
            return ["full_attention"] * layers
    if kinds is not None and family in PER_LAYER:
        if not isinstance(kinds, list) or len(kinds) != layers or not set(kinds) <= {"full_attention",
                                                                                    "sliding_attention"}:
            raise HFImportError(f"`layer_types` is {kinds!r}: full_attention or sliding_attention for each layer "
                                "was expected", field="layer_types")
        return kinds
    if window is None or (family == "qwen2_moe" and window == 0):
        return ["full_attention"] * layers
    if family in ("qwen2", "qwen3"):  # the layers from `max_window_layers` on
        return ["sliding_attention" if i >= top else "full_attention" for i in range(layers)]
    if family == "qwen2_moe":  # every other layer below `max_window_layers`
        return ["sliding_attention" if (i + 1) % 2 and i < top else "full_attention" for i in range(layers)]
    if family == "gemma3_text":  # one full layer in `every`
        every = f.int("sliding_window_pattern", f.int("_sliding_window_pattern", 6))
        return ["full_attention" if (i + 1) % every == 0 else "sliding_attention" for i in range(layers)]
    if family == "gemma2":  # every other layer, the first sliding
        return ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)]
    return ["sliding_attention"] * layers


def _window(f: Fields) -> int:
    window = f.get("sliding_window")
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
        raise HFImportError(f"`sliding_window` is {window!r}: a positive integer was expected", field="sliding_window")
    return window


def moe_schedule(f: Fields, family: str, layers: int) -> list[bool]:
    """Whether each layer's FFN is the mixture of experts (Qwen MoE: `decoder_sparse_step`,
    `mlp_only_layers`; Mixtral: every layer)."""
    if family == "mixtral":
        return [True] * layers
    step = f.int("decoder_sparse_step", 1)
    dense = f.get("mlp_only_layers", [])
    if not isinstance(dense, list) or not all(isinstance(i, int) and 0 <= i < layers for i in dense):
        raise HFImportError(f"`mlp_only_layers` is {dense!r}: a list of layer indices was expected",
                            field="mlp_only_layers")
    return [i not in dense and (i + 1) % step == 0 for i in range(layers)]


class _Layer:
    """The text of a decoder layer's block and where its nodes' weights live."""

    def __init__(self, family: str, f: Fields, d: int, heads: int, kv: int, head_dim: int) -> None:
        self.family = family
        gemma = family in GEMMA
        if family == "olmo":  # OLMo's LayerNorm has no parameters and a fixed ε of 1e-5
            self.eps = 1e-5
            self.norm = "layernorm({x}, affine=false)"
            clip = f.get("clip_qkv")
            if clip is not None:
                raise HFImportError(f"`clip_qkv` is {clip!r}: archc does not clamp q, k and v; it imports null",
                                    field="clip_qkv")
        else:
            self.eps = f.number("rms_norm_eps", 1e-6)
            self.norm = f"rmsnorm({{x}}, eps={number(self.eps)}{', unit_offset=true' if gemma else ''})"
        # the attention's settings, block settings aside (window, pos)
        args = ["heads=heads"] + (["kv_heads=kv_heads"] if kv != heads else [])
        if head_dim != d // heads:
            args.append(f"head_dim={head_dim}" if not gemma else "head_dim=head_dim")
        if family in ("qwen2", "qwen2_moe"):
            if family == "qwen2_moe":
                f.only("qkv_bias", (True,), True, ": Qwen2-MoE's q, k, v biases")
            args += ["bias=true", "out_bias=false"]
        elif f.flag("attention_bias", False):
            args.append("bias=true")
        args.append("causal=true")
        if family in ("qwen3", "qwen3_moe", "gemma3_text", "olmo2"):  # q/k RMSNorms with the model's ε
            args.append("qk_norm=true")
            if self.eps != 1e-6:
                args.append(f"qk_norm_eps={number(self.eps)}")
            if family == "olmo2":
                args.append("qk_norm_width=true")
            if family == "gemma3_text":
                args.append("qk_norm_unit_offset=true")
        if family in ("gemma2", "gemma3_text"):
            scalar = f.number("query_pre_attn_scalar", head_dim)
            if scalar != head_dim:
                args.append(f"scale={number(scalar ** -0.5)}")
            cap = f.get("attn_logit_softcapping")
            if cap is not None:
                args.append(f"softcap={number(f.number('attn_logit_softcapping'))}")
        if gemma and f.flag("use_bidirectional_attention", False):
            raise HFImportError("`use_bidirectional_attention` is true: archc imports Gemma as a causal language model",
                                field="use_bidirectional_attention")
        if family == "granite":
            scale = f.number("attention_multiplier", 1.0)
            if scale != head_dim ** -0.5:
                args.append(f"scale={number(scale)}")
        self.attn_args = args
        self.residual = f.number("residual_multiplier", 1.0) if family == "granite" else 1.0

    def attention(self, extra: list[str]) -> str:
        return "attention(\n      {x},\n      " + ",\n      ".join(self.attn_args + extra) + ",\n    )"

    def body(self, ffn: str, extra: list[str], shared: str = "") -> str:
        """The block's statements (x the residual stream); `extra` the attention's window and pos;
        `shared` Qwen2-MoE's gated shared expert of `h`, beside the experts."""
        n = self.norm
        attn, scale = self.attention(extra), "" if self.residual == 1.0 else f" * {number(self.residual)}"
        if self.family == "olmo2":  # norms after each sublayer
            a = n.format(x=attn.format(x="x"))
            m = n.format(x=ffn.format(h="x"))
        elif self.family in ("gemma2", "gemma3_text"):  # and before it
            a = n.format(x=attn.format(x=n.format(x="x")))
            m = n.format(x=ffn.format(h=n.format(x="x")))
        elif shared:  # Qwen2-MoE: the experts and the gated shared expert read the same normed input
            return (f"x = x + {attn.format(x=n.format(x='x'))}\n    h = {n.format(x='x')}\n"
                    f"    shared = {shared}\n    return x + {ffn.format(h='h')} + shared")
        else:
            a = attn.format(x=n.format(x="x"))
            m = ffn.format(h=n.format(x="x"))
        return f"x = x + {a}{scale}\n    return x + {m}{scale}"

    def modules(self) -> dict[str, str]:
        p = "model.layers.{i}."
        if self.family == "olmo2":
            norms = {"norm": "post_attention_layernorm", "norm_1": "post_feedforward_layernorm"}
        elif self.family in ("gemma2", "gemma3_text"):
            norms = {"norm": "input_layernorm", "norm_1": "post_attention_layernorm",
                     "norm_2": "pre_feedforward_layernorm", "norm_3": "post_feedforward_layernorm"}
        else:
            norms = {"norm": "input_layernorm", "norm_1": "post_attention_layernorm"}
        out = {f"layers.{{i}}.{k}": p + v for k, v in norms.items()}
        out["layers.{i}.attn"] = p + "self_attn"
        out["layers.{i}.mlp"] = p + "mlp"
        return out


def moe_ffn(f: Fields, family: str, ffn: int) -> tuple[str, str, dict[str, Any], list[str]]:
    """The MoE FFN's text (`{h}` its input), Qwen2-MoE's shared expert's (of `h`), the experts'
    sources, and the constants they name."""
    if family == "mixtral":
        experts, hidden = f.int("num_local_experts"), ffn
        jitter = f.number("router_jitter_noise", 0.0)
        if jitter:
            raise HFImportError(f"`router_jitter_noise` is {jitter}: Mixtral scales the experts' input too, archc's "
                                "`jitter` only the router's", field="router_jitter_noise")
        renormalize = True
    else:
        experts = f.int("num_experts") if family == "qwen2_moe" else f.int("num_local_experts", f.get("num_experts"))
        f.get("num_experts")
        hidden = f.int("moe_intermediate_size")
        renormalize = f.flag("norm_topk_prob", False)
    top_k = f.int("num_experts_per_tok")
    aux = f.number("router_aux_loss_coef", 0.001)
    f.get("output_router_logits")  # whether transformers adds the aux loss: archc's `aux_loss` trains with it
    consts = [f"experts = {experts}"] + ([f"expert_ffn = {hidden}"] if family != "mixtral" else [])
    args = ["{h}", "experts=experts", f"top_k={top_k}",
            f"expert=swiglu(hidden={'ffn' if family == 'mixtral' else 'expert_ffn'})", f"aux_loss={number(aux)}"]
    if not renormalize:
        args.append("renormalize=false")
    text = "moe(\n      " + ",\n      ".join(args) + ",\n    )"
    p = "model.layers.{i}."
    old_router = p + ("block_sparse_moe.gate.weight" if family == "mixtral" else "mlp.gate.weight")

    def per_expert(e: int) -> tuple[str, str, str]:
        if family == "mixtral":
            old = p + f"block_sparse_moe.experts.{e}."
            return old + "w1.weight", old + "w3.weight", old + "w2.weight"
        old = p + f"mlp.experts.{e}."
        return old + "gate_proj.weight", old + "up_proj.weight", old + "down_proj.weight"

    sources = expert_sources(p + "mlp.experts.", experts, hidden, per_expert)
    sources["layers.{i}.moe.router.weight"] = (Source(p + "mlp.gate.weight"), Source(old_router))
    shared = ""
    if family in ("qwen2_moe", "qwen3_next"):  # a shared expert every token goes through, gated per token
        consts.append(f"shared_ffn = {f.int('shared_expert_intermediate_size')}")
        shared = ('sigmoid(linear(h, out=1, bias=false, name="shared_expert_gate")) * '
                  'swiglu(h, hidden=shared_ffn, name="shared_expert")')
    return text, shared, sources, consts


def expert_sources(stacked: str, experts: int, hidden: int,
                   per_expert: Callable[[int], tuple[str, str, str]]) -> dict[str, Any]:
    """The experts' weights of `layers.{i}.moe`, from either layout a checkpoint has: transformers
    5's stacked `gate_up_proj` [E, 2·F, d] and `down_proj` under `stacked`, or one module per
    expert (`per_expert(e)`: its gate, up and down weights' names)."""
    sources: dict[str, Any] = {}
    for e in range(experts):
        gate, up, down = per_expert(e)
        ours = f"layers.{{i}}.moe.experts.{e}."
        sources[ours + "gate_proj.weight"] = (Source(stacked + "gate_up_proj", rows=(0, hidden), index=e), Source(gate))
        sources[ours + "up_proj.weight"] = (Source(stacked + "gate_up_proj", rows=(hidden, 2 * hidden), index=e),
                                            Source(up))
        sources[ours + "down_proj.weight"] = (Source(stacked + "down_proj", index=e), Source(down))
    return sources


def decoder_family(family: str, f: Fields) -> ImportPlan:
    """Llama, Mistral, Mixtral, OLMo, OLMo 2, Phi-3, Qwen2, Qwen3, Qwen2-MoE, Qwen3-MoE, Granite,
    Gemma, Gemma 2, Gemma 3 (text): see the module's docstring for what differs."""
    vocab, d, layers = f.int("vocab_size"), f.int("hidden_size"), f.int("num_hidden_layers")
    heads = f.int("num_attention_heads")
    kv = f.int("num_key_value_heads", heads)
    ffn = f.int("intermediate_size")
    head_dim = f.int("head_dim", d // heads)
    gemma = family in GEMMA
    if family == "gemma":  # transformers reads a legacy "gelu" as the tanh approximation
        f.only("hidden_act", ("gelu_pytorch_tanh", "gelu"), "gelu_pytorch_tanh", ": GeGLU's gate (tanh GELU)")
        f.only("hidden_activation", ("gelu_pytorch_tanh",), "gelu_pytorch_tanh")
    elif gemma:
        f.only("hidden_activation", ("gelu_pytorch_tanh",), "gelu_pytorch_tanh", ": GeGLU's gate (tanh GELU)")
        f.get("hidden_act")
    else:
        f.only("hidden_act", ("silu",), "silu", ": SwiGLU's gate")
    if family not in MOE:
        f.only("mlp_bias", (False,), False)
    layer = _Layer(family, f, d, heads, kv, head_dim)
    tied = f.flag("tie_word_embeddings", family not in ("qwen2", "qwen3", "qwen2_moe", "qwen3_moe"))
    kinds = _layer_types(f, family, layers)
    ropes = rope_sets(f)
    fraction = f.number("partial_rotary_factor", 1.0)
    windows = {k: (_window(f) if k == "sliding_attention" else None) for k in set(kinds)}
    if family in ("qwen2", "qwen3", "qwen2_moe", "qwen3_moe", "olmo2", "gemma"):
        f.get("sliding_window")  # Qwen's without `use_sliding_window`; OLMo 2 and Gemma have none

    consts = [f"vocab = {vocab}", f"d = {d}", f"layers = {layers}", f"heads = {heads}"]
    if kv != heads:
        consts.append(f"kv_heads = {kv}")
    if gemma and head_dim != d // heads:
        consts.append(f"head_dim = {head_dim}")
    consts.append(f"ffn = {ffn}")
    sources: dict[str, Any] = {}
    moe_layers = moe_schedule(f, family, layers) if family in MOE else [False] * layers
    ffn_text = {False: ("geglu" if gemma else "swiglu") + "({h}, hidden=ffn)"}
    shared = ""
    if any(moe_layers):
        ffn_text[True], shared, sources, more = moe_ffn(f, family, ffn)
        consts += more
    if family == "phi3":  # q, k, v fused in `qkv_proj`, gate and up in `gate_up_proj`: rows of each
        p = "model.layers.{i}."
        q, k = heads * head_dim, kv * head_dim
        for name, rows in (("q_proj", (0, q)), ("k_proj", (q, q + k)), ("v_proj", (q + k, q + 2 * k))):
            sources[f"layers.{{i}}.attn.{name}.weight"] = Source(p + "self_attn.qkv_proj.weight", rows=rows)
        for name, rows in (("gate_proj", (0, ffn)), ("up_proj", (ffn, 2 * ffn))):
            sources[f"layers.{{i}}.mlp.{name}.weight"] = Source(p + "mlp.gate_up_proj.weight", rows=rows)

    # the layers' kinds: the FFN (a block each) and the attention (a block's settings: window, pos)
    ffn_kinds = sorted(set(moe_layers), reverse=True)
    block_of = {m: "decoder" for m in ffn_kinds} if len(ffn_kinds) == 1 else {True: "moe_decoder",
                                                                             False: "dense_decoder"}
    rope_of = {k: rope_text(ropes[k], fraction) for k in set(kinds)}
    attn_varies = len(set(kinds)) > 1
    blocks = []
    for m in ffn_kinds:
        if attn_varies:
            header = f"{block_of[m]}(x, window=none, pos={rope_of['full_attention']})"
            extra = ["window=window", "pos=pos"]
        else:
            header = f"{block_of[m]}(x)"
            w = windows[kinds[0]]
            extra = ([f"window={w}"] if w else []) + [f"pos={rope_of[kinds[0]]}"]
        blocks.append((header, layer.body(ffn_text[m], extra, shared if m else "")))
    calls = []
    for m, kind in zip(moe_layers, kinds, strict=True):
        sliding = attn_varies and kind == "sliding_attention"
        calls.append(f"{block_of[m]}(window={windows[kind]}, pos={rope_of[kind]})" if sliding else block_of[m])
    letter = _letters(moe_layers, kinds)
    stack = stack_text(calls, [letter[m, k] for m, k in zip(moe_layers, kinds, strict=True)])

    embed = "embed(tokens, vocab, d" + (", scale=true)" if gemma else ")")
    if family == "granite":
        mult = f.number("embedding_multiplier", 1.0)
        embed += f" * {number(mult)}" if mult != 1.0 else ""
    final = layer.norm.format(x="x")
    if family == "granite":
        logits = f.number("logits_scaling", 1.0)
        final += f" / {number(logits)}" if logits != 1.0 else ""
    head = [final, f"tied={'true' if tied else 'false'}"]
    if family in ("gemma2", "gemma3_text") and f.get("final_logit_softcapping") is not None:
        head.append(f"softcap={number(f.number('final_logit_softcapping'))}")
    spec = model_text(family, consts, blocks, embed, stack, ", ".join(head))
    modules = {"embed": "model.embed_tokens", "norm": "model.norm", **layer.modules()}
    if any(moe_layers):
        modules["layers.{i}.moe"] = "model.layers.{i}.mlp"
        modules["layers.{i}.shared_expert"] = "model.layers.{i}.mlp.shared_expert"
        modules["layers.{i}.shared_expert_gate.proj"] = "model.layers.{i}.mlp.shared_expert_gate"
    if not tied:
        modules["lm_head"] = "lm_head"
    skip = ("rotary_emb.inv_freq", "lm_head.weight") if tied else ("rotary_emb.inv_freq",)
    return ImportPlan(family, spec, modules, layers, skip=skip, sources=sources)


def _letters(moe_layers: list[bool], kinds: list[str]) -> dict[tuple[bool, str], str]:
    """Layout letters: S/F (sliding, full attention) where the attention varies, E/D (MoE, dense
    FFN) where the FFN does, A–D where both do."""
    sliding = {"sliding_attention": "S", "full_attention": "F"}
    if len(set(moe_layers)) == 1:
        return {(m, k): sliding[k] for m in (True, False) for k in sliding}
    if len(set(kinds)) == 1:
        return {(m, k): "E" if m else "D" for m in (True, False) for k in sliding}
    return {(m, k): "ABCD"[2 * (not m) + (k == "full_attention")] for m in (True, False) for k in sliding}
