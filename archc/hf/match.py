"""Whether a spec is exactly a Hugging Face family, and if so its config and name map.

The family rules of `families.py` go one way, config → spec. Rather than a second, inverse rule
per family (two tables to keep in step), export-hf *proposes* a config from the spec's IR — the
widths, the attention's flags, the norm's ε, the rope — and imports it back through the family's
own rule; the spec is that family only when the imported graph equals the spec's node for node
(op, parameters, wiring, types; node names aside). The name map is then the import's, run
backwards: each of the spec's weights goes to the checkpoint tensor the import would read it from,
fused tensors (Phi-3's `qkv_proj`, GPT-2's `c_attn`, Mixtral's stacked experts) reassembled from
their rows, transposes undone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from archc.hf.config import HFImportError
from archc.hf.families import ImportPlan, Source
from archc.ir.graph import Graph, Node


@dataclass
class FamilyMatch:
    config: dict[str, Any]
    plan: ImportPlan
    #: the spec's weight key → the checkpoint tensor (or part of one) it is
    names: dict[str, Source]

    def to_hf(self, state: dict[str, Any]) -> dict[str, Any]:
        """The spec's state dict under the family's checkpoint names."""
        import torch

        parts: dict[str, list[tuple[Source, Any]]] = {}
        for key, src in self.names.items():
            parts.setdefault(src.name, []).append((src, state[key]))
        out = {}
        for name, pieces in parts.items():
            if len(pieces) == 1 and pieces[0][0] == Source(name):
                out[name] = pieces[0][1]
                continue
            by_index: dict[int | None, list[tuple[Source, Any]]] = {}
            for src, t in pieces:
                by_index.setdefault(src.index, []).append((src, t))
            whole = []
            for index in sorted(by_index, key=lambda i: -1 if i is None else i):
                rows = sorted(by_index[index], key=lambda p: p[0].rows[0] if p[0].rows else 0)
                if rows[0][0].period is not None:  # interleaved: each piece's rows back into every period
                    blocks = [t.reshape(-1, s.rows[1] - s.rows[0], *t.shape[1:]) for s, t in rows]
                    t = torch.cat(blocks, dim=1).reshape(-1, *rows[0][1].shape[1:])
                else:
                    t = torch.cat([t for _, t in rows]) if len(rows) > 1 else rows[0][1]
                whole.append(t.t().contiguous() if rows[0][0].transpose else t)
            out[name] = torch.stack(whole) if None not in by_index else whole[0]
        return out


def match_family(graph: Graph) -> tuple[FamilyMatch | None, str]:
    """(the family `graph` is exactly, or None; in words, the reason it is not)."""
    from archc.errors import ArchError
    from archc.frontend import loads
    from archc.hf.importer import name_map, plan_config

    proposal = propose(graph)
    if isinstance(proposal, str):
        return None, proposal
    try:
        plan = plan_config(proposal)
        theirs = loads(plan.spec, f"{plan.family}.arch").graph
    except (HFImportError, ArchError) as e:  # the proposal is not a config the rule takes: not the family
        return None, f"the {proposal['model_type']} config it suggests does not import ({e})"
    ids, why = _same(graph, theirs)
    if ids is None:
        return None, f"it differs from {proposal['model_type']}: {why}"
    names = name_map(plan, theirs, set(), write=True)
    back = {v: k for k, v in ids.items()}  # their node id → ours
    ours = {}
    for key, src in names.items():
        node = max((n for n in back if key.startswith(n + ".")), key=len)
        ours[back[node] + key[len(node):]] = src
    return FamilyMatch(proposal, plan, ours), proposal["model_type"]


def _same(ours: Graph, theirs: Graph) -> tuple[dict[str, str] | None, str]:
    """({our node id: theirs}, "") when the graphs are the same node for node, else (None, the
    first difference)."""
    a, b = list(ours.walk()), list(theirs.walk())
    kept = [n for n in a if n.op != "dropout"]  # identity at inference; the family's config holds its rates
    if len(kept) != len(b):
        return None, f"{len(kept)} nodes against {len(b)}"
    ids: dict[str, str] = {}  # our node → the family's
    names: dict[str, str] = {}  # as ids, and a dropout → the family's name of the node it reads
    y_of = iter(b)
    for x in a:
        if x.op == "dropout":
            names[x.id] = names.get(x.inputs[0], x.inputs[0])
            continue
        y = next(y_of)
        ids[x.id] = names[x.id] = y.id
        if _sig(x, names) != _sig(y, None):
            return None, f"`{x.id}` is {_sig(x, names)[:160]}, the family's `{y.id}` {_sig(y, None)[:160]}"
    return ids, ""


def _sig(n: Node, ids: dict[str, str] | None) -> str:
    """A node's op, parameters, inputs and type, its ids written in the other graph's names."""
    def name(i: str) -> str:
        return ids.get(i, i) if ids is not None else i

    ties = {k: (name(v.rsplit(".", 1)[0]) + "." + v.rsplit(".", 1)[1]) for k, v in n.ties.items()}
    return f"{n.op}({', '.join(map(name, n.inputs))}; {sorted(n.params.items(), key=str)}; {ties}) : {n.type}"


# -- proposals ------------------------------------------------------------------------------


def propose(graph: Graph) -> dict[str, Any] | str:
    """The config of the family `graph` looks like, or why it looks like none."""
    ops = [n.op for n in graph.walk()]
    embed = next((n for n in graph.walk() if n.op == "embed"), None)
    head = graph.nodes[graph.outputs[0]]
    if embed is None or head.op not in ("lm_head", "cls_head"):
        return "it is not embed … lm_head (or cls_head)"
    common = {"vocab_size": int(embed.params["vocab"]), "hidden_size": int(embed.params["d"]),
              "tie_word_embeddings": bool(head.params.get("tied"))}
    attn = [n for n in graph.walk() if n.op == "attention"]
    if attn and not any(n.params.get("causal") for n in attn):
        return _bert(graph, attn, head, common)
    if head.op != "lm_head":
        return "a causal model with a classification head is in no family export-hf writes"
    mixers = [n for n in graph.walk() if n.op in ("mamba", "mamba2")]
    if mixers and attn:
        return _hybrid(graph, attn, mixers, common)
    if attn and any(n.op == "gated_deltanet" for n in graph.walk()):
        return _qwen3_next(graph, attn, common)
    if mixers:
        return _mamba(graph, mixers, common)
    if not attn and any(n.op == "rwkv_time_mix" for n in graph.walk()):
        return _rwkv(graph, common)
    if not attn:
        from archc.ops.registry import REGISTRY

        kinds = sorted({n.op for n in graph.walk() if REGISTRY[n.op].role == "mixer"})
        return f"its mixers ({', '.join(kinds)}) are in no family export-hf writes"
    if "learned_pos" in ops:
        return _gpt2(graph, attn, common)
    if any(n.op == "layernorm" and n.params.get("affine", True) for n in graph.walk()):
        return _neox(graph, attn, common)
    return _decoder(graph, attn, common)


def rope_config(rope: dict[str, Any]) -> dict[str, Any]:
    """transformers' `rope_parameters` of archc's `rope(...)` settings (partial rotary aside)."""
    kind = "default" if rope.get("scaling", "none") in ("none", None) else rope["scaling"]
    out: dict[str, Any] = {"rope_type": kind, "rope_theta": float(rope.get("theta", 10000.0))}
    if kind != "default":
        out["factor"] = float(rope.get("factor", 1.0))
    if kind == "llama3":
        out.update(low_freq_factor=float(rope.get("low_freq_factor", 1.0)),
                   high_freq_factor=float(rope.get("high_freq_factor", 4.0)),
                   original_max_position_embeddings=int(rope.get("original_max_len", 8192)))
    if kind == "yarn":
        out.update(original_max_position_embeddings=int(rope.get("original_max_len", 8192)),
                   beta_fast=float(rope.get("beta_fast", 32.0)), beta_slow=float(rope.get("beta_slow", 1.0)),
                   truncate=bool(rope.get("truncate", True)))
        if rope.get("attention_factor") is not None:
            out["attention_factor"] = float(rope["attention_factor"])
    return out


def _decoder(graph: Graph, attn: list[Node], common: dict[str, Any]) -> dict[str, Any] | str:
    """A config of the transformer decoder family the graph looks like (`decoders.py`'s rule
    decides, when the proposal is imported back and compared)."""
    from archc.hf.decoders import ARCH, PER_LAYER

    nodes = list(graph.walk())
    settings = [{k: v for k, v in n.params.items() if k not in ("window", "pos")} for n in attn]
    if any(s != settings[0] for s in settings):
        return "its attention layers differ from each other"
    a = attn[0].params
    d, heads = common["hidden_size"], int(a["heads"])
    if any((n.params.get("pos") or {}).get("op") != "rope" for n in attn):
        return "its attention has no rotary positions"
    layer_of, k = {}, -1
    for n in nodes:  # a node belongs to the layer of the attention before it
        k += n.op == "attention"
        layer_of[n.id] = k
    norms = [n for n in nodes if n.op in ("rmsnorm", "layernorm")]
    moe = [n for n in nodes if n.op == "moe"]
    shared = [n for n in nodes if n.op == "swiglu" and any(
        m.op == "mul" and n.id in m.inputs for m in nodes)]
    dense = [n for n in nodes if n.op in ("swiglu", "geglu") and n not in shared]
    scales = [n for n in nodes if n.op == "scale"]
    if not norms or not (dense or moe):
        return "it has no RMSNorm and SwiGLU layers"
    unit = any(n.params.get("unit_offset") for n in norms)
    per_layer = (len(norms) - 1) / len(attn)
    olmo = all(n.op == "layernorm" and n.params.get("affine") is False for n in norms)
    rope = attn[-1].params["pos"]["params"]
    if unit:
        family = "gemma3_text" if a.get("qk_norm") else "gemma2" if per_layer == 4 else "gemma"
    elif moe:
        family = "qwen2_moe" if shared else "qwen3_moe" if a.get("qk_norm") else "mixtral"
    elif a.get("qk_norm_width"):
        family = "olmo2"
    elif scales or a.get("scale"):
        family = "granite"
    elif olmo:
        family = "olmo"
    elif a.get("qk_norm"):
        family = "qwen3"
    elif a.get("bias") is True and a.get("out_bias") is False:
        family = "qwen2"
    elif float(rope.get("fraction", 1.0)) != 1.0:
        family = "phi3"
    else:
        family = "mistral" if any(n.params.get("window") for n in attn) else "llama"
    head_dim = int(a.get("head_dim") or d // heads)
    cfg: dict[str, Any] = {
        "model_type": family, "architectures": [f"{ARCH[family]}ForCausalLM"], **common,
        "num_hidden_layers": len(attn), "num_attention_heads": heads,
        "num_key_value_heads": int(a.get("kv_heads") or heads), "head_dim": head_dim,
        "max_position_embeddings": 4096,
    }
    if dense:
        cfg["intermediate_size"] = int(dense[0].params["hidden"])
    if family in ("gemma", "gemma2", "gemma3_text"):
        cfg["hidden_act" if family == "gemma" else "hidden_activation"] = "gelu_pytorch_tanh"
    else:
        cfg["hidden_act"] = "silu"
    # positions and windows: the full layers' rope (Gemma 3's sliding layers have their own)
    windows = [n.params.get("window") for n in attn]
    sliding = [n for n in attn if n.params.get("window")]
    full = [n for n in attn if not n.params.get("window")] or attn
    rope = full[0].params["pos"]["params"]
    if any(n.params["pos"] != full[0].params["pos"] for n in full):
        return "its attention layers have different rotary positions"
    rope_cfg = rope_config(rope)
    if float(rope.get("fraction", 1.0)) != 1.0:
        cfg["partial_rotary_factor"] = float(rope["fraction"])
    cfg["rope_parameters"] = rope_cfg
    if family == "gemma3_text" and sliding:
        local = sliding[0].params["pos"]["params"]
        cfg["rope_parameters"] = {"full_attention": rope_cfg, "sliding_attention": {
            "rope_type": "default", "rope_theta": float(local.get("theta", 10000.0))}}
    if len({w for w in windows if w}) > 1:
        return "its sliding windows differ from layer to layer"
    window = int(sliding[0].params["window"]) if sliding else None
    if family in PER_LAYER and sliding:
        cfg["layer_types"] = ["sliding_attention" if w else "full_attention" for w in windows]
    if family in ("qwen2", "qwen3", "qwen2_moe", "qwen3_moe"):
        cfg.update(use_sliding_window=bool(window), sliding_window=window, max_window_layers=0)
    elif family not in ("llama", "olmo", "olmo2", "granite", "gemma"):
        cfg["sliding_window"] = window
    if not olmo:
        cfg["rms_norm_eps"] = float(norms[0].params.get("eps", 1e-6))
    if family not in ("qwen2", "qwen2_moe", "mixtral"):
        cfg["attention_bias"] = bool(a.get("bias"))
    if family not in ("mixtral", "qwen2_moe", "qwen3_moe"):
        cfg["mlp_bias"] = False
    if family in ("gemma2", "gemma3_text"):
        scalar = float(a["scale"]) ** -2 if a.get("scale") else head_dim
        cfg["query_pre_attn_scalar"] = round(scalar) if abs(scalar - round(scalar)) < 1e-6 else scalar
        cfg["attn_logit_softcapping"] = a.get("softcap")
        cfg["final_logit_softcapping"] = graph.nodes[graph.outputs[0]].params.get("softcap")
    if family == "granite":
        cfg["attention_multiplier"] = float(a.get("scale") or head_dim ** -0.5)
        embed = next(n for n in nodes if n.op == "embed")
        head_in = graph.nodes[graph.outputs[0]].inputs[0]
        cfg["embedding_multiplier"], cfg["logits_scaling"], cfg["residual_multiplier"] = 1.0, 1.0, 1.0
        for n in scales:
            by = float(n.params["by"])
            if n.inputs[0] == embed.id:
                cfg["embedding_multiplier"] = by
            elif n.id == head_in:
                cfg["logits_scaling"] = 1.0 / by
            else:
                cfg["residual_multiplier"] = by
    if moe:
        fields = _moe_fields(layer_of, dense, shared, moe)
        if isinstance(fields, str):
            return fields
        if family == "mixtral":
            cfg.update(num_local_experts=fields["num_experts"], num_experts_per_tok=fields["num_experts_per_tok"],
                       intermediate_size=fields["moe_intermediate_size"], router_jitter_noise=0.0,
                       router_aux_loss_coef=fields["router_aux_loss_coef"])
        else:
            cfg.update(fields)
            cfg.setdefault("intermediate_size", fields["moe_intermediate_size"])
    return cfg


def _neox(graph: Graph, attn: list[Node], common: dict[str, Any]) -> dict[str, Any] | str:
    """GPT-NeoX (an MLP) or StableLM (SwiGLU): LayerNorms with biases, partial rotary attention,
    the FFN beside the attention (`use_parallel_residual`) when it reads the same input."""
    a = attn[0].params
    if any(n.params != a for n in attn):
        return "its attention layers differ from each other"
    if (a.get("pos") or {}).get("op") != "rope":
        return "its attention has no rotary positions"
    rope = a["pos"]["params"]
    nodes = list(graph.walk())
    norms = [n for n in nodes if n.op == "layernorm"]
    ffn = [n for n in nodes if n.op in ("mlp", "swiglu")]
    if not ffn:
        return "it has LayerNorms but not GPT-NeoX's MLP or StableLM's SwiGLU layers"
    neox = ffn[0].op == "mlp"
    by_id = {n.id: n for n in nodes}  # nodes inside a block's body too (`graph.nodes` is the top level)
    attn_in, ffn_in = by_id.get(attn[0].inputs[0]), by_id.get(ffn[0].inputs[0])
    if attn_in is None or ffn_in is None:
        return "its attention or FFN reads a value from outside its layer"
    parallel = attn_in.id == ffn_in.id or (attn_in.op == ffn_in.op == "layernorm" and attn_in.inputs == ffn_in.inputs)
    cfg: dict[str, Any] = {
        "model_type": "gpt_neox" if neox else "stablelm",
        "architectures": ["GPTNeoXForCausalLM" if neox else "StableLmForCausalLM"], **common,
        "num_hidden_layers": len(attn), "num_attention_heads": int(a["heads"]),
        "intermediate_size": int(ffn[0].params["hidden"]), "layer_norm_eps": float(norms[0].params.get("eps", 1e-5)),
        "use_parallel_residual": parallel, "max_position_embeddings": 4096,
        "rope_parameters": {**rope_config(rope), "partial_rotary_factor": float(rope.get("fraction", 1.0))}}
    if neox:
        act = ffn[0].params.get("act", "gelu")
        cfg.update(attention_bias=bool(a.get("bias")),
                   hidden_act={"gelu": "gelu", "gelu_tanh": "gelu_new"}.get(act, act))
    else:
        cfg.update(num_key_value_heads=int(a.get("kv_heads") or a["heads"]), use_qkv_bias=bool(a.get("bias")),
                   qk_layernorm=False, hidden_act="silu")
    return cfg


def _moe_fields(layer_of: dict[str, int], dense: list[Node], shared: list[Node],
                moe: list[Node]) -> dict[str, Any] | str:
    """The MoE fields of the Qwen MoE families' configs (Qwen2-MoE, Qwen3-MoE, Qwen3-Next)."""
    m = moe[0].params
    expert = m.get("expert") or {}
    if not isinstance(expert, dict) or expert.get("op") != "swiglu":
        return "its experts are not SwiGLU"
    out = {"num_experts": int(m["experts"]), "num_experts_per_tok": int(m["top_k"]),
           "moe_intermediate_size": int(expert["params"]["hidden"]), "norm_topk_prob": bool(m.get("renormalize", True)),
           "decoder_sparse_step": 1, "mlp_only_layers": sorted({layer_of[n.id] for n in dense}),
           "router_aux_loss_coef": float(m.get("aux_loss") or 0.0)}
    if shared:
        out["shared_expert_intermediate_size"] = int(shared[0].params["hidden"])
    return out


def _qwen3_next(graph: Graph, attn: list[Node], common: dict[str, Any]) -> dict[str, Any] | str:
    """Qwen3-Next: Gated DeltaNet and gated attention layers, zero-centred norms, a Qwen MoE."""
    nodes = list(graph.walk())
    gdn = [n for n in nodes if n.op == "gated_deltanet"]
    a, g = attn[0].params, gdn[0].params
    if any(n.params != a for n in attn) or any(n.params != g for n in gdn):
        return "its attention or Gated DeltaNet layers differ from each other"
    if (a.get("pos") or {}).get("op") != "rope":
        return "its attention has no rotary positions"
    layer_of, k, kinds = {}, -1, []
    for n in nodes:
        if n.op in ("attention", "gated_deltanet"):
            k += 1
            kinds.append("full_attention" if n.op == "attention" else "linear_attention")
        layer_of[n.id] = k
    moe = [n for n in nodes if n.op == "moe"]
    shared = [n for n in nodes if n.op == "swiglu" and any(m.op == "mul" and n.id in m.inputs for m in nodes)]
    dense = [n for n in nodes if n.op == "swiglu" and n not in shared]
    norms = [n for n in nodes if n.op == "rmsnorm"]
    if not norms or not (dense or moe):
        return "it has no RMSNorm and SwiGLU layers"
    rope = a["pos"]["params"]
    heads = int(a["heads"])
    cfg: dict[str, Any] = {
        "model_type": "qwen3_next", "architectures": ["Qwen3NextForCausalLM"], **common,
        "num_hidden_layers": len(kinds), "num_attention_heads": heads,
        "num_key_value_heads": int(a.get("kv_heads") or heads),
        "head_dim": int(a.get("head_dim") or common["hidden_size"] // heads),
        "intermediate_size": int((dense or shared or [None])[0].params["hidden"]) if dense or shared else 1,
        "rms_norm_eps": float(norms[0].params.get("eps", 1e-6)), "hidden_act": "silu", "layer_types": kinds,
        "attention_bias": bool(a.get("bias")),
        "rope_parameters": {"rope_type": "default", "rope_theta": float(rope.get("theta", 10000.0)),
                            "partial_rotary_factor": float(rope.get("fraction", 1.0))},
        "linear_num_key_heads": int(g["heads"]), "linear_key_head_dim": int(g["head_dim"]),
        "linear_num_value_heads": int(g.get("v_heads") or g["heads"]),
        "linear_value_head_dim": int(g.get("v_head_dim") or g["head_dim"]), "linear_conv_kernel_dim": int(g["d_conv"])}
    if moe:
        fields = _moe_fields(layer_of, dense, shared, moe)
        if isinstance(fields, str):
            return fields
        cfg.update(fields)
    else:
        cfg.update(mlp_only_layers=list(range(len(kinds))))
    return cfg


def _periodic(marks: list[bool]) -> tuple[int, int] | None:
    """(period, offset) with `marks[i]` ⇔ i % period == offset (Jamba's layer schedule), or None."""
    n = len(marks)
    for period in range(1, n + 1):
        for offset in range(period):
            if all((i % period == offset) == m for i, m in enumerate(marks)):
                return period, offset
    return None


def _hybrid(graph: Graph, attn: list[Node], mixers: list[Node], common: dict[str, Any]) -> dict[str, Any] | str:
    """Jamba (Mamba layers with Δ/B/C norms, attention without positions, MoE on a schedule) or
    Bamba (Mamba-2 layers, partial-rotary attention at `attn_layer_indices`)."""
    op = mixers[0].op
    if any(n.op != op for n in mixers):
        return "it mixes Mamba and Mamba-2 layers"
    m, a = mixers[0].params, attn[0].params
    if any(n.params != m for n in mixers) or any(n.params != a for n in attn):
        return "its Mamba or attention layers differ from each other"
    nodes = list(graph.walk())
    kinds: list[str] = []
    moe_at: set[int] = set()
    ffn: list[Node] = []
    for n in nodes:
        if n.op in ("attention", op):
            kinds.append(n.op)
        elif n.op == "moe":
            moe_at.add(len(kinds) - 1)
        elif n.op == "swiglu":
            ffn.append(n)
    norms = [n for n in nodes if n.op == "rmsnorm"]
    moe = [n for n in nodes if n.op == "moe"]
    if not norms or not (ffn or moe):
        return "it has no RMSNorm and SwiGLU layers"
    hidden = int(ffn[0].params["hidden"]) if ffn else int(moe[0].params["expert"]["params"]["hidden"])
    d, heads = common["hidden_size"], int(a["heads"])
    cfg: dict[str, Any] = {
        **common, "num_hidden_layers": len(kinds), "num_attention_heads": heads,
        "num_key_value_heads": int(a.get("kv_heads") or heads), "intermediate_size": hidden,
        "rms_norm_eps": float(norms[0].params.get("eps", 1e-6)), "hidden_act": "silu",
        "mamba_d_state": int(m["d_state"]), "mamba_d_conv": int(m["d_conv"]), "mamba_expand": int(m["expand"]),
        "mamba_conv_bias": bool(m.get("conv_bias", True)), "mamba_proj_bias": bool(m.get("bias"))}
    if op == "mamba":
        attn_at = _periodic([k == "attention" for k in kinds])
        if attn_at is None:
            return "its attention layers do not recur with a period (Jamba's `attn_layer_period`)"
        experts_at = _periodic([i in moe_at for i in range(len(kinds))]) if moe else (1, 0)
        if experts_at is None:
            return "its MoE layers do not recur with a period (Jamba's `expert_layer_period`)"
        cfg.update(model_type="jamba", architectures=["JambaForCausalLM"], attn_layer_period=attn_at[0],
                   attn_layer_offset=attn_at[1], expert_layer_period=experts_at[0], expert_layer_offset=experts_at[1],
                   mamba_dt_rank=int(m["dt_rank"]) if m.get("dt_rank") else "auto", use_mamba_kernels=False,
                   num_experts=int(moe[0].params["experts"]) if moe else 1,
                   num_experts_per_tok=int(moe[0].params["top_k"]) if moe else 1,
                   router_aux_loss_coef=float(moe[0].params.get("aux_loss") or 0.0) if moe else 0.001)
        return cfg
    rope = (a.get("pos") or {}).get("params") or {}
    head_dim = int(m["head_dim"])
    cfg.update(model_type="bamba", architectures=["BambaForCausalLM"],
               attn_layer_indices=[i for i, k in enumerate(kinds) if k == "attention"],
               mamba_n_heads=int(m["expand"]) * d // head_dim, mamba_d_head=head_dim,
               mamba_n_groups=int(m.get("groups") or 1), mamba_chunk_size=int(m.get("chunk") or 256),
               attention_bias=bool(a.get("bias")), mlp_bias=False,
               rope_parameters={"rope_type": "default", "rope_theta": float(rope.get("theta", 10000.0)),
                                "partial_rotary_factor": float(rope.get("fraction", 1.0))})
    return cfg


def _gpt2(graph: Graph, attn: list[Node], common: dict[str, Any]) -> dict[str, Any] | str:
    pos = next(n for n in graph.walk() if n.op == "learned_pos")
    mlp = [n for n in graph.walk() if n.op == "mlp"]
    norms = [n for n in graph.walk() if n.op == "layernorm"]
    if not mlp or not norms:
        return "it has learned positions but not GPT-2's LayerNorm and MLP layers"
    act = mlp[0].params.get("act")
    return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": common["vocab_size"],
            "n_embd": common["hidden_size"], "n_layer": len(attn), "n_head": int(attn[0].params["heads"]),
            "n_positions": int(pos.params["max_len"]), "n_inner": int(mlp[0].params["hidden"]),
            "activation_function": "gelu" if act == "gelu" else "gelu_new",
            "layer_norm_epsilon": float(norms[0].params.get("eps", 1e-5)),
            "tie_word_embeddings": common["tie_word_embeddings"]}


def _bert(graph: Graph, attn: list[Node], head: Node, common: dict[str, Any]) -> dict[str, Any] | str:
    """BERT, with its classification head (`cls_head`) or its masked-LM head (`lm_head` on the
    prediction transform)."""
    nodes = list(graph.walk())
    embed = next(n for n in nodes if n.op == "embed")
    pos = next((n for n in nodes if n.op == "learned_pos"), None)
    mlp = [n for n in nodes if n.op == "mlp"]
    norms = [n for n in nodes if n.op == "layernorm"]
    if pos is None or not mlp or not norms:
        return "it is a bidirectional encoder, but without BERT's learned positions, LayerNorms and MLP"
    act = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}.get(str(mlp[0].params.get("act")))
    if act is None:
        return f"its MLP's activation `{mlp[0].params.get('act')}` is not one BERT has"
    cfg: dict[str, Any] = {
        "model_type": "bert", **common, "num_hidden_layers": len(attn), "num_attention_heads": int(attn[0].params["heads"]),
        "intermediate_size": int(mlp[0].params["hidden"]), "max_position_embeddings": int(pos.params["max_len"]),
        "type_vocab_size": int(embed.params.get("token_types") or 0), "layer_norm_eps": float(norms[0].params["eps"]),
        "hidden_act": act, "position_embedding_type": "absolute"}
    if head.op == "cls_head":
        classes = int(head.params["classes"])
        cfg.update(architectures=["BertForSequenceClassification"], tie_word_embeddings=True,
                   id2label={str(i): f"LABEL_{i}" for i in range(classes)},
                   label2id={f"LABEL_{i}": i for i in range(classes)})
    else:
        cfg["architectures"] = ["BertForMaskedLM"]
    return cfg


def _rwkv(graph: Graph, common: dict[str, Any]) -> dict[str, Any] | str:
    """RWKV-4's config; the graph is then compared with the spec it imports to (`match_family`)."""
    mixes = [n for n in graph.walk() if n.op == "rwkv_time_mix"]
    if any(int(n.params.get("version", 4)) != 4 for n in mixes):
        return "its RWKV layers are RWKV-6 (Finch), which transformers does not implement"
    channel = [n for n in graph.walk() if n.op == "rwkv_channel_mix"]
    norms = [n for n in graph.walk() if n.op == "layernorm"]
    if not channel or not norms:
        return "it is not RWKV-4's blocks of time-mix and channel-mix"
    d = common["hidden_size"]
    return {"model_type": "rwkv", "architectures": ["RwkvForCausalLM"], **common,
            "num_hidden_layers": len(mixes), "attention_hidden_size": int(mixes[0].params.get("hidden") or d),
            "intermediate_size": int(channel[0].params["hidden"]),
            "layer_norm_epsilon": float(norms[0].params.get("eps", 1e-5)), "rescale_every": 0}


def _mamba(graph: Graph, mixers: list[Node], common: dict[str, Any]) -> dict[str, Any] | str:
    m = mixers[0].params
    if any(n.params != m for n in mixers):
        return "its Mamba layers differ from each other"
    family = mixers[0].op
    if m.get("norm_dt_bc"):
        if m.get("norm_dt_bc_weights"):
            return "its Mamba layers' Δ/B/C norms have learned scales (Jamba's), which no Mamba family has"
        family = "falcon_mamba"
    d = common["hidden_size"]
    norms = [n for n in graph.walk() if n.op == "rmsnorm"]
    cfg: dict[str, Any] = {
        "model_type": family, "architectures": [{"mamba": "MambaForCausalLM", "mamba2": "Mamba2ForCausalLM",
                                                 "falcon_mamba": "FalconMambaForCausalLM"}[family]], **common,
        "num_hidden_layers": len(mixers), "state_size": int(m["d_state"]), "expand": int(m["expand"]),
        "intermediate_size": int(m["expand"]) * d, "conv_kernel": int(m["d_conv"]), "hidden_act": "silu",
        "use_bias": bool(m.get("bias")), "use_conv_bias": bool(m.get("conv_bias", True)),
        "layer_norm_epsilon": float(norms[0].params.get("eps", 1e-5)) if norms else 1e-5}
    if family in ("mamba", "falcon_mamba"):
        cfg["time_step_rank"] = int(m["dt_rank"]) if m.get("dt_rank") else "auto"
    if family == "falcon_mamba":
        cfg["mixer_rms_eps"] = float(m.get("norm_eps", 1e-6))
    if family == "mamba2":
        head_dim = int(m["head_dim"])
        cfg.update(head_dim=head_dim, num_heads=int(m["expand"]) * d // head_dim, n_groups=int(m.get("groups") or 1),
                   chunk_size=int(m.get("chunk") or 256))
    return cfg
