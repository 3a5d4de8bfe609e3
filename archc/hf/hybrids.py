"""The hybrid families: Mamba or Mamba-2 layers with attention layers among them, read from the
config's layer schedule — Jamba's `attn_layer_period` / `attn_layer_offset` (and its MoE's
`expert_layer_period` / `expert_layer_offset`), Bamba's `attn_layer_indices`.

Each layer is a pre-norm pair: its mixer (`mamba`, `mamba2` or `attention`) and its FFN (SwiGLU,
or Jamba's top-k mixture of SwiGLU experts without renormalization). Each kind of layer is a
block of the spec, laid out by a `pattern` in the config's order.
"""

from __future__ import annotations

from typing import Any

from archc.hf.config import Fields, HFImportError
from archc.hf.decoders import expert_sources, moe_ffn, moe_schedule
from archc.hf.plan import (
    ImportPlan,
    model_text,
    number,
    rope_sets,
    rope_text,
    stack_text,
    unclamped_time_step,
)

#: layout letters: the mixer, then the FFN
_LETTERS = {("mamba", False): "M", ("mamba", True): "E", ("attention", False): "A", ("attention", True): "B"}
_BLOCKS = {("mamba", False): "mamba_mlp", ("mamba", True): "mamba_moe", ("attention", False): "attn_mlp",
           ("attention", True): "attn_moe"}


def _schedule(f: Fields, family: str, layers: int) -> tuple[list[str], list[bool]]:
    """Each layer's mixer (`mamba` or `attention`) and whether its FFN is the MoE."""
    if family == "jamba":
        period, offset = f.int("attn_layer_period", 8), f.get("attn_layer_offset", 4)
        e_period, e_offset = f.int("expert_layer_period", 2), f.get("expert_layer_offset", 1)
        for name, v in (("attn_layer_offset", offset), ("expert_layer_offset", e_offset)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise HFImportError(f"`{name}` is {v!r}: a layer offset was expected", field=name)
        experts = f.int("num_experts", 16)
        mixers = ["attention" if i % period == offset else "mamba" for i in range(layers)]
        return mixers, [experts > 1 and i % e_period == e_offset for i in range(layers)]
    indices = f.get("attn_layer_indices") or []
    if not isinstance(indices, list) or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < layers
                                                for i in indices):
        raise HFImportError(f"`attn_layer_indices` is {indices!r}: layer indices were expected",
                            field="attn_layer_indices")
    return ["attention" if i in indices else "mamba" for i in range(layers)], [False] * layers


def hybrid_family(family: str, f: Fields) -> ImportPlan:
    """Jamba (Mamba + attention without positions + MoE) and Bamba (Mamba-2 + partial-rotary
    attention): see the module docstring."""
    vocab, d, layers = f.int("vocab_size"), f.int("hidden_size"), f.int("num_hidden_layers")
    heads, ffn = f.int("num_attention_heads"), f.int("intermediate_size")
    kv = f.int("num_key_value_heads", heads)
    eps = f.number("rms_norm_eps", 1e-6)
    f.only("hidden_act", ("silu",), "silu", ": SwiGLU's gate and the mixer's")
    tied = f.flag("tie_word_embeddings", False)
    mixers, moe = _schedule(f, family, layers)
    norm = f"rmsnorm(x, eps={number(eps)})"
    consts = [f"vocab = {vocab}", f"d = {d}", f"layers = {layers}", f"heads = {heads}"]
    if kv != heads:
        consts.append(f"kv_heads = {kv}")
    consts.append(f"ffn = {ffn}")
    attn = ["heads=heads"] + (["kv_heads=kv_heads"] if kv != heads else []) + ["causal=true"]
    state, conv, expand = f.int("mamba_d_state"), f.int("mamba_d_conv", 4), f.int("mamba_expand", 2)
    ssm = [f"d_state={state}", f"expand={expand}", f"d_conv={conv}"]
    if family == "jamba":
        for name in ("use_mamba_kernels", "use_mambapy", "use_associative_scan", "num_logits_to_keep"):
            f.get(name)  # which kernel transformers runs, and how many logits it returns
        rank = f.get("mamba_dt_rank", "auto")
        if rank != "auto":
            rank = f.int("mamba_dt_rank")
            if rank != -(-d // 16):
                ssm.append(f"dt_rank={rank}")
        ssm += ["norm_dt_bc=true", "norm_dt_bc_weights=true"] + ([f"norm_eps={number(eps)}"] if eps != 1e-6 else [])
        op = "mamba"
        window = f.get("sliding_window")
        if window is not None:
            raise HFImportError(f"`sliding_window` is {window!r}: archc imports Jamba's full attention only",
                                field="sliding_window")
    else:
        from archc.backends.torch.ops.mamba2 import NORM_EPS

        heads_ssm, head_dim = f.int("mamba_n_heads"), f.int("mamba_d_head")
        if heads_ssm * head_dim != expand * d:
            raise HFImportError(f"`mamba_n_heads` × `mamba_d_head` is {heads_ssm} × {head_dim}, not the inner "
                                f"width {expand * d}", field="mamba_n_heads")
        if eps != NORM_EPS:
            raise HFImportError(f"`rms_norm_eps` is {eps}: Bamba's gated norm uses it, archc's Mamba-2 {NORM_EPS}",
                                field="rms_norm_eps")
        unclamped_time_step(f)
        f.get("z_loss_coefficient")  # a training loss on the logits, not the function
        f.get("num_logits_to_keep")
        ssm += [f"head_dim={head_dim}", f"groups={f.int('mamba_n_groups', 1)}", f"chunk={f.int('mamba_chunk_size', 256)}"]
        op = "mamba2"
        if f.flag("attention_bias", False):
            attn.append("bias=true")
        f.only("mlp_bias", (False,), False)
        attn.append(f"pos={rope_text(rope_sets(f)['full_attention'], f.number('partial_rotary_factor', 1.0))}")
    if not f.flag("mamba_conv_bias", True):
        ssm.append("conv_bias=false")
    if f.flag("mamba_proj_bias", False):
        ssm.append("bias=true")
    sources: dict[str, Any] = {}
    if any(moe):
        experts, top_k = f.int("num_experts"), f.int("num_experts_per_tok")
        aux = f.number("router_aux_loss_coef", 0.001)
        f.get("output_router_logits")
        consts.append(f"experts = {experts}")
        p = "model.layers.{i}.feed_forward.experts."
        sources = expert_sources(p, experts, ffn, lambda e: (p + f"{e}.gate_proj.weight", p + f"{e}.up_proj.weight",
                                                             p + f"{e}.down_proj.weight"))
        moe_text = (f"moe({norm}, experts=experts, top_k={top_k}, expert=swiglu(hidden=ffn), "
                    f"aux_loss={number(aux)}, renormalize=false)")
    elif family == "jamba":
        f.get("num_experts_per_tok"), f.get("router_aux_loss_coef"), f.get("output_router_logits")
    kinds = list(zip(mixers, moe, strict=True))
    blocks = []
    for kind in dict.fromkeys(kinds):
        mixer = (f"{op}({norm}, {', '.join(ssm)})" if kind[0] == "mamba"
                 else f"attention({norm}, {', '.join(attn)})")
        ffn_text = moe_text if kind[1] else f"swiglu({norm}, hidden=ffn)"
        blocks.append((f"{_BLOCKS[kind]}(x)", f"x = x + {mixer}\n    return x + {ffn_text}"))
    stack = stack_text([_BLOCKS[k] for k in kinds], [_LETTERS[k] for k in kinds])
    spec = model_text(family, consts, blocks, "embed(tokens, vocab, d)", stack,
                      f"{norm}, tied={'true' if tied else 'false'}")
    p = "model.layers.{i}."
    modules = {"embed": "model.embed_tokens", "norm": "model.final_layernorm",
               "layers.{i}.norm": p + "input_layernorm", "layers.{i}.norm_1": p + "pre_ff_layernorm",
               "layers.{i}.mixer": p + "mamba", "layers.{i}.attn": p + "self_attn", "layers.{i}.mlp": p + "feed_forward",
               "layers.{i}.moe": p + "feed_forward"}
    if not tied:
        modules["lm_head"] = "lm_head"
    skip = ("rotary_emb.inv_freq", "lm_head.weight") if tied else ("rotary_emb.inv_freq",)
    return ImportPlan(family, spec, modules, layers, skip=skip, sources=sources)


def qwen3_next_family(f: Fields) -> ImportPlan:
    """Qwen3-Next: Gated DeltaNet layers (`linear_attention`) with gated attention layers among
    them (`full_attention`: q/k norms, partial rotary, each head's output gated by a sigmoid of a
    second query projection), zero-centred RMSNorms (1 + weight), and a MoE with Qwen2-MoE's
    gated shared expert (dense layers where `mlp_only_layers` / `decoder_sparse_step` say)."""
    vocab, d, layers = f.int("vocab_size"), f.int("hidden_size"), f.int("num_hidden_layers")
    heads, ffn = f.int("num_attention_heads"), f.int("intermediate_size")
    kv = f.int("num_key_value_heads", heads)
    head_dim = f.int("head_dim", d // heads)
    eps = f.number("rms_norm_eps", 1e-6)
    f.only("hidden_act", ("silu",), "silu", ": SwiGLU's gate and the Gated DeltaNet's")
    tied = f.flag("tie_word_embeddings", False)
    kinds = f.get("layer_types")
    if kinds is None:
        every = f.int("full_attention_interval", 4)
        kinds = ["full_attention" if (i + 1) % every == 0 else "linear_attention" for i in range(layers)]
    else:
        f.get("full_attention_interval")
    if not isinstance(kinds, list) or len(kinds) != layers or not set(kinds) <= {"full_attention", "linear_attention"}:
        raise HFImportError(f"`layer_types` is {kinds!r}: full_attention or linear_attention for each layer was "
                            "expected", field="layer_types")
    norm = f"rmsnorm(x, eps={number(eps)}, unit_offset=true)"
    attn = ["heads=heads"] + (["kv_heads=kv_heads"] if kv != heads else [])
    if head_dim != d // heads:
        attn.append("head_dim=head_dim")
    if f.flag("attention_bias", False):
        attn.append("bias=true")
    attn += ["causal=true", "qk_norm=true"] + ([f"qk_norm_eps={number(eps)}"] if eps != 1e-6 else [])
    attn += ["qk_norm_unit_offset=true", "out_gate=true",
             f"pos={rope_text(rope_sets(f)['full_attention'], f.number('partial_rotary_factor', 1.0))}"]
    gdn = [f"heads={f.int('linear_num_key_heads')}", f"head_dim={f.int('linear_key_head_dim')}",
           f"v_heads={f.int('linear_num_value_heads')}", f"v_head_dim={f.int('linear_value_head_dim')}",
           f"d_conv={f.int('linear_conv_kernel_dim', 4)}"] + ([f"norm_eps={number(eps)}"] if eps != 1e-6 else [])
    consts = [f"vocab = {vocab}", f"d = {d}", f"layers = {layers}", f"heads = {heads}"] + \
        ([f"kv_heads = {kv}"] if kv != heads else []) + \
        ([f"head_dim = {head_dim}"] if head_dim != d // heads else []) + [f"ffn = {ffn}"]
    moe = moe_schedule(f, "qwen3_next", layers)
    sources: dict[str, Any] = {}
    if any(moe):
        moe_text, shared, sources, more = moe_ffn(f, "qwen3_next", ffn)
        consts += more
    else:
        f.get("num_experts_per_tok"), f.get("moe_intermediate_size"), f.get("shared_expert_intermediate_size")
        f.get("norm_topk_prob"), f.get("router_aux_loss_coef"), f.get("output_router_logits")
    blocks, names = [], {}
    for kind, m in dict.fromkeys(zip(kinds, moe, strict=True)):
        mixer = (f"gated_deltanet({norm}, {', '.join(gdn)})" if kind == "linear_attention"
                 else f"attention({norm}, {', '.join(attn)})")
        name = ("linear" if kind == "linear_attention" else "full") + ("_moe" if m else "_mlp")
        names[kind, m] = name
        if m:
            body = (f"x = x + {mixer}\n    h = {norm}\n    shared = {shared}\n"
                    f"    return x + {moe_text.format(h='h')} + shared")
        else:
            body = f"x = x + {mixer}\n    return x + swiglu({norm}, hidden=ffn)"
        blocks.append((f"{name}(x)", body))

    def letter(kind: str, m: bool) -> str:  # L / F (linear, full), M / D for the dense ones among MoE layers
        c = "L" if kind == "linear_attention" else "F"
        return {"L": "M", "F": "D"}[c] if len(set(moe)) > 1 and not m else c

    layers_kinds = list(zip(kinds, moe, strict=True))
    stack = stack_text([names[k] for k in layers_kinds], [letter(*k) for k in layers_kinds])
    spec = model_text("qwen3_next", consts, blocks, "embed(tokens, vocab, d)", stack,
                      f"{norm}, tied={'true' if tied else 'false'}")
    p = "model.layers.{i}."
    modules = {"embed": "model.embed_tokens", "norm": "model.norm", "layers.{i}.norm": p + "input_layernorm",
               "layers.{i}.norm_1": p + "post_attention_layernorm", "layers.{i}.attn": p + "self_attn",
               "layers.{i}.mixer": p + "linear_attn", "layers.{i}.mlp": p + "mlp", "layers.{i}.moe": p + "mlp",
               "layers.{i}.shared_expert": p + "mlp.shared_expert",
               "layers.{i}.shared_expert_gate.proj": p + "mlp.shared_expert_gate"}
    if not tied:
        modules["lm_head"] = "lm_head"
    skip = ("rotary_emb.inv_freq", "lm_head.weight") if tied else ("rotary_emb.inv_freq",)
    return ImportPlan("qwen3_next", spec, modules, layers, skip=skip, sources=sources)
