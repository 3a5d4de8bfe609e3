"""What a family rule returns, and the pieces of spec text the rules share.

A family rule (`decoders.py`, `families.py`) reads its config through `Fields` and returns an
`ImportPlan`: the spec text (formatted, with the widths as named constants) and, for each archc
node that holds weights, the checkpoint module it comes from (`layers.{i}.attn` ←
`model.layers.{i}.self_attn`), or a `Source` where a tensor is stored otherwise (transposed,
fused, stacked). archc's ops name their weights as transformers' modules do (`q_proj.weight`,
`gate_proj.weight`, a norm's `weight`), so the node → module table is most of the name map; the
importer checks it against the spec's declared weights, both ways, before it writes anything.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

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
    #: `rows` are taken from every block of `period` rows (GPT-NeoX's `query_key_value` holds q, k
    #: and v of each head in turn: q is rows [0, hd) of every 3·hd)
    period: int | None = None

    def at(self, i: int) -> Source:
        """This source with `{i}` in its name written out as layer i."""
        return Source(self.name.format(i=i), self.transpose, self.rows, self.index, self.period)


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


def number(x: float) -> str:
    """A float as the spec writes it: 10000.0 → 10000, 1e-06 → 1e-6."""
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    text = repr(float(x))
    return text.replace("e-0", "e-").replace("e+0", "e")


#: rope scaling types archc computes, and those it refuses (by name, with why)
ROPE_REFUSED = {
    "dynamic": "dynamic NTK scaling changes the rotation with the sequence length at run time",
    "longrope": "LongRoPE's per-dimension factors are not implemented",
    # archc's own `rope(scaling="ntk")` proposes this name on export-hf: the spec goes out through
    # the modeling file, and says why
    "ntk": "transformers has no static NTK-aware rope type (its `dynamic` one changes with the length)",
}


def rope_text(params: dict[str, Any], fraction: float = 1.0, theta: float = 10000.0) -> str:
    """`rope(...)` of one rope parameter set (transformers' `rope_parameters`, or `rope_scaling`
    merged with `rope_theta`); scaling types archc does not compute are refused by name."""
    theta = _rope_number(params, "rope_theta", theta)
    kind = params.get("rope_type", params.get("type", "default"))
    args = [f"theta={number(theta)}"]
    if kind == "linear":
        args += ['scaling="linear"', f"factor={number(_rope_number(params, 'factor'))}"]
    elif kind == "llama3":  # Llama 3.1's per-frequency scaling
        args += ['scaling="llama3"', f"factor={number(_rope_number(params, 'factor'))}",
                 f"low_freq_factor={number(_rope_number(params, 'low_freq_factor', 1.0))}",
                 f"high_freq_factor={number(_rope_number(params, 'high_freq_factor', 4.0))}",
                 f"original_max_len={_rope_length(params)}"]
    elif kind == "yarn":  # YaRN (Qwen2.5 / Qwen3 long context, DeepSeek): the ramp and the temperature
        args += ['scaling="yarn"', f"factor={number(_rope_number(params, 'factor'))}",
                 f"original_max_len={_rope_length(params)}"]
        for key, default in (("beta_fast", 32.0), ("beta_slow", 1.0)):
            if params.get(key) and _rope_number(params, key) != default:  # transformers: `or` its default
                args.append(f"{key}={number(params[key])}")
        truncate = params.get("truncate", True)
        if not isinstance(truncate, bool):
            raise HFImportError(f"`rope_parameters.truncate` is {truncate!r}: true or false was expected",
                                field="rope_parameters")
        if not truncate:
            args.append("truncate=false")
        temperature = yarn_attention_factor(params)
        if temperature is not None:
            args.append(f"attention_factor={number(temperature)}")
    elif kind != "default":
        why = ROPE_REFUSED.get(kind, "archc does not know it")
        raise HFImportError(f"`rope_parameters` asks for rope scaling `{kind}` ({params}): {why}; archc imports "
                            "default, linear, llama3 and yarn", "docs/hf.md lists the rope variants", field="rope_parameters")
    fraction = _rope_number(params, "partial_rotary_factor", fraction)
    if fraction != 1.0:
        args.append(f"fraction={number(fraction)}")
    return f"rope({', '.join(args)})"


def _rope_number(params: dict[str, Any], key: str, default: float | None = None) -> float:
    """A number of a rope set, or the import's diagnostic naming it (a missing `factor`, a string)."""
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HFImportError(f"`rope_parameters.{key}` is {value!r}: a number was expected "
                            f"(rope_type {params.get('rope_type', params.get('type'))!r})", field="rope_parameters")
    return float(value)


def _rope_length(params: dict[str, Any]) -> int:
    """The trained context length a scaled rope reads (`original_max_position_embeddings`)."""
    length = _rope_number(params, "original_max_position_embeddings")
    if not length.is_integer() or length < 1:
        raise HFImportError(f"`rope_parameters.original_max_position_embeddings` is "
                            f"{params['original_max_position_embeddings']!r}: "
                            "a positive integer was expected", field="rope_parameters")
    return int(length)


def yarn_attention_factor(params: dict[str, Any]) -> float | None:
    """YaRN's cos/sin factor when it is not rope(...)'s own default (0.1·ln(factor) + 1): the
    config's `attention_factor`, or DeepSeek's ratio of `mscale` to `mscale_all_dim` (as
    transformers' `_compute_yarn_parameters`)."""
    def mscale(scale: float, m: float = 1.0) -> float:
        return 0.1 * m * math.log(scale) + 1.0 if scale > 1 else 1.0

    if params.get("attention_factor") is not None:
        return _rope_number(params, "attention_factor")
    if params.get("mscale") and params.get("mscale_all_dim"):
        factor = _rope_number(params, "factor")
        return mscale(factor, _rope_number(params, "mscale")) / mscale(factor, _rope_number(params, "mscale_all_dim"))
    return None


def rope_sets(f: Fields) -> dict[str, dict[str, Any]]:
    """The rope parameters by layer type (`full_attention`, `sliding_attention`): transformers 5's
    `rope_parameters` (one set, or one per layer type as Gemma 3's), or the older `rope_theta` +
    `rope_scaling` (+ Gemma 3's `rope_local_base_freq` for its sliding layers)."""
    params = f.get("rope_parameters") or {}
    scaling = f.get("rope_scaling") or {}
    if not isinstance(params, dict) or not isinstance(scaling, dict):
        raise HFImportError("`rope_parameters` / `rope_scaling` is not an object", field="rope_parameters")
    base = {"rope_theta": f.get("rope_theta", 10000.0)}
    context = (f.get("original_max_position_embeddings"), f.get("max_position_embeddings", 8192))
    if params and set(params) <= {"full_attention", "sliding_attention"}:
        if not all(isinstance(v, dict) for v in params.values()):
            raise HFImportError(f"`rope_parameters` is {params!r}: objects per layer type were expected",
                                field="rope_parameters")
        return {kind: _with_context({**base, **v}, None, context[1]) for kind, v in params.items()}
    merged = _with_context({**base, **scaling, **params}, *context)
    out = {"full_attention": merged, "sliding_attention": merged}
    local = f.get("rope_local_base_freq")
    if local is not None:  # Gemma 3 before transformers 5: the sliding layers' own base, unscaled
        out["sliding_attention"] = {"rope_type": "default", "rope_theta": local}
    return out


def _with_context(params: dict[str, Any], outside: Any, max_len: Any) -> dict[str, Any]:
    """A rope set with the pretraining context length its scaling reads, as transformers'
    `standardize_rope_params`: Phi-3's `original_max_position_embeddings` outside the set wins,
    else the set's own, else `max_position_embeddings`; a `factor` of null (DeepSeek's YaRN) is
    max_position_embeddings / that length."""
    if params.get("rope_type", params.get("type", "default")) not in ("llama3", "yarn", "longrope"):
        return params
    out = {"original_max_position_embeddings": max_len, **params}
    if outside is not None:
        out["original_max_position_embeddings"] = outside
    if out.get("factor") is None and "factor" in out:
        if isinstance(max_len, bool) or not isinstance(max_len, int | float):
            raise HFImportError(f"`max_position_embeddings` is {max_len!r}: a number was expected (a null rope "
                                "`factor` is max_position_embeddings / original_max_position_embeddings)",
                                field="max_position_embeddings")
        out["factor"] = float(max_len) / _rope_length(out)
    return out


def unclamped_time_step(f: Fields) -> None:
    """Refuse a Mamba-2 Δ clamp (`time_step_limit` other than [0, inf]): archc's Mamba-2 does not
    clamp Δ. transformers writes non-finite floats as {"__float__": "Infinity"}."""
    limit = f.get("time_step_limit", [0.0, float("inf")])
    if isinstance(limit, list):
        with contextlib.suppress(TypeError, ValueError):  # else left as written: refused below with its value
            limit = [float(v["__float__"]) if isinstance(v, dict) and "__float__" in v else v for v in limit]
    if limit != [0.0, float("inf")]:
        raise HFImportError(f"`time_step_limit` is {limit!r}: archc's Mamba-2 does not clamp Δ; it imports "
                            "[0.0, inf]", field="time_step_limit")


def layout_expr(kinds: str) -> str:
    """A layer layout as the spec writes it: the shortest repeating unit (`"SF" * 13`,
    `"SSSSSF" * 4 + "SS"`), else the letters."""
    for p in range(1, len(kinds) // 2 + 1):
        unit, k = kinds[:p], len(kinds) // p
        if k >= 2 and unit * k == kinds[:p * k]:
            rest = kinds[p * k:]
            if not rest or unit.startswith(rest):
                return f'"{unit}" * {k}' + (f' + "{rest}"' if rest else "")
    return f'"{kinds}"'


def stack_text(calls: list[str], letters: list[str]) -> str:
    """The layer stack of a spec: `repeat(layers, call)` where every layer is the same block call,
    else a `pattern` of the layers' letters (one letter per distinct call)."""
    if len(set(calls)) == 1:
        return f"repeat(layers, {calls[0]})"
    pairs = dict(zip(letters, calls, strict=True))
    assert len(pairs) == len(set(calls)), "one letter per block call"
    return f"pattern({layout_expr(''.join(letters))}, " + ", ".join(f"{c}={pairs[c]}" for c in sorted(pairs)) + ")"


def model_text(family: str, consts: list[str], blocks: list[tuple[str, str]], embed: str, stack: str,
               head: str) -> str:
    """An imported spec: its constants, its blocks ((header, body) pairs), the embedding, the layer
    stack and the head's arguments, formatted as `archc fmt` writes it."""
    constants = "\n".join(f"  {c}" for c in consts)
    text = "\n\n".join(f"  block {header} {{\n    {body}\n  }}" for header, body in blocks)
    return format_spec(f"# {family} imported from a Hugging Face config by `archc import-hf` (docs/hf.md).\n"
                       f"model {family}(tokens) {{\n{constants}\n\n{text}\n\n"
                       f"  x = {embed}\n  x = {stack}(x)\n  return lm_head({head})\n}}\n")


def format_spec(spec: str) -> str:
    """The spec as `archc fmt` writes it (a rule writes it close; the formatter has the last word)."""
    from archc.dsl.fmt import format_text

    return format_text(spec, "imported.arch")
