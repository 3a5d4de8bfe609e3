"""Config → spec, per family: what each Hugging Face `model_type` is in archc's language, and
where each archc node's weights live in the checkpoint.

A family rule reads its config through `Fields` and returns an `ImportPlan`: the spec text
(formatted, with the widths as named constants) and, for each archc node that holds weights, the
checkpoint module it comes from (`layers.{i}.attn` ← `model.layers.{i}.self_attn`). archc's ops
name their weights as transformers' modules do (`q_proj.weight`, `gate_proj.weight`, a norm's
`weight`), so the node → module table is the whole name map; the importer checks it against the
spec's declared weights, both ways, before it writes anything.

Families so far: the Llama family (llama, mistral, qwen2) — the rest of issue #23's list is
docs/hf.md's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from archc.hf.config import Fields, HFImportError


@dataclass(frozen=True)
class ImportPlan:
    family: str
    spec: str
    #: archc node id pattern (`{i}` the layer) → the checkpoint's module prefix
    modules: dict[str, str]
    layers: int
    #: checkpoint tensors that are not weights of the function (rotary `inv_freq` buffers)
    skip: tuple[str, ...] = ()


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
    if family == "qwen2" and not f.flag("use_sliding_window", False):
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
    """Llama, Mistral, Qwen2: pre-norm decoder blocks of RMSNorm → GQA with RoPE (q/k/v biases
    with `attention_bias`, Qwen2's always) → RMSNorm → SwiGLU, tied or untied head."""
    vocab, d, layers = f.int("vocab_size"), f.int("hidden_size"), f.int("num_hidden_layers")
    heads = f.int("num_attention_heads")
    kv = f.int("num_key_value_heads", heads)
    ffn = f.int("intermediate_size")
    head_dim = f.int("head_dim", d // heads)
    f.only("hidden_act", ("silu",), "silu", ": SwiGLU's gate")
    f.only("mlp_bias", (False,), False)
    eps = f.number("rms_norm_eps", 1e-6)
    tied = f.flag("tie_word_embeddings", family != "qwen2")
    qkv_bias = True if family == "qwen2" else f.flag("attention_bias", False)
    window = _window(f, family, layers)
    attn = [f"rmsnorm(x, eps={_number(eps)})", "heads=heads"]
    if kv != heads:
        attn.append("kv_heads=kv_heads")
    if head_dim != d // heads:
        attn.append(f"head_dim={head_dim}")
    if qkv_bias:
        attn += ["bias=true", "out_bias=false"] if family == "qwen2" else ["bias=true"]
    attn.append("causal=true")
    if window:
        attn.append(f"window={window}")
    attn.append(f"pos={_rope(f)}")
    consts = [f"vocab = {vocab}", f"d = {d}", f"layers = {layers}", f"heads = {heads}"]
    if kv != heads:
        consts.append(f"kv_heads = {kv}")
    consts.append(f"ffn = {ffn}")
    body = ",\n      ".join(attn)
    constants = "\n".join(f"  {c}" for c in consts)
    spec = f"""# {family} imported from a Hugging Face config by `archc import-hf` (docs/hf.md).
model {family}(tokens) {{
{constants}

  block decoder(x) {{
    x = x + attention(
      {body},
    )
    return x + swiglu(rmsnorm(x, eps={_number(eps)}), hidden=ffn)
  }}

  x = embed(tokens, vocab, d)
  x = repeat(layers, decoder)(x)
  return lm_head(rmsnorm(x, eps={_number(eps)}), tied={"true" if tied else "false"})
}}
"""
    modules = {"embed": "model.embed_tokens", "layers.{i}.norm": "model.layers.{i}.input_layernorm",
               "layers.{i}.attn": "model.layers.{i}.self_attn",
               "layers.{i}.norm_1": "model.layers.{i}.post_attention_layernorm",
               "layers.{i}.mlp": "model.layers.{i}.mlp", "norm": "model.norm"}
    if not tied:
        modules["lm_head"] = "lm_head"
    return ImportPlan(family, spec, modules, layers, skip=("rotary_emb.inv_freq", "lm_head.weight") if tied else
                      ("rotary_emb.inv_freq",))


#: model_type → its rule
FAMILIES: dict[str, Callable[[Fields], ImportPlan]] = {
    name: (lambda f, name=name: llama_family(name, f)) for name in ("llama", "mistral", "qwen2")
}
