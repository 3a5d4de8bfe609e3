"""Generated files: docs/ops.md from the op registry, docs/errors.md from the codes, and the
registry's catalog of family files (`archc/ops/_catalog.py`, what makes op lookup lazy).

`python -m archc.docs_gen` rewrites all three; a test checks that the committed files are current.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from archc.ops.registry import QUANTIZED_BY_DEFAULT, OpDef


def value_text(v: Any) -> str:
    """A value as a user writes it in a spec: `true`, `none`, `"elu"`, `[0]`, `rope(theta=10000.0)`."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(value_text(x) for x in v) + "]"
    if isinstance(v, dict) and "op" in v:
        inner = ", ".join(f"{k}={value_text(x)}" for k, x in v.get("params", {}).items())
        return f"{v['op']}({inner})"
    return str(v)


_BOUNDS = (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"))


def _bounds(metadata: list[Any]) -> str:
    parts = []
    for m in metadata:
        for attr, sym in _BOUNDS:
            if getattr(m, attr, None) is not None:
                parts.append(f"{sym} {value_text(getattr(m, attr))}")
    return " and ".join(parts)


def type_text(annotation: Any, metadata: list[Any] | None = None, components: tuple[str, ...] = ()) -> str:
    """A parameter's type in the language's terms: `int > 0`, `number ≥ 0`, `true/false`,
    `"elu" | "relu"`, `list of int ≥ 0`, `` `rope` or `alibi`, e.g. rope(...) `` (`, optional` when
    none is allowed)."""
    metadata = list(metadata or [])
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return type_text(args[0], [*metadata, *args[1:]], components)
    if origin in (Union, UnionType):
        real = [a for a in args if a is not type(None)]
        text = " | ".join(type_text(a, metadata, components) for a in real)
        return f"{text}, optional" if len(real) < len(args) else text
    if origin is Literal:
        return " | ".join(value_text(a) for a in args)
    if origin in (list, tuple):
        return f"list of {type_text(args[0], [], components)}" if args else "list"
    if origin is dict or annotation is dict:
        if not components:
            return "an op, e.g. op(...)"
        return f"{' or '.join(f'`{c}`' for c in components)}, e.g. {_EXAMPLE.get(components[0], components[0] + '(...)')}"
    names = {bool: "true/false", int: "int", float: "number", str: "string"}
    base = names.get(annotation, getattr(annotation, "__name__", str(annotation)))
    bounds = _bounds(metadata)
    return f"{base} {bounds}" if bounds else base


_EXAMPLE = {"rope": "rope(theta=10000)", "swiglu": "swiglu(hidden=512)"}


def _rows(op: OpDef) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, f in op.params.model_fields.items():
        typ = type_text(f.annotation, f.metadata, op.components.get(name, ()))
        default = "required" if f.is_required() else value_text(f.default)
        rows.append((name, typ, default, f.description or ""))
    return rows


def _inputs(op: OpDef) -> str:
    inputs = ", ".join([*op.inputs, *(f"{i} (optional)" for i in op.optional_inputs)])
    if op.takes_block:
        inputs += ", block=<block>"
    return inputs or "-"


def op_reference(op: OpDef) -> str:
    """One op's entry of docs/ops.md (markdown)."""
    lines = [f"### `{op.name}`", "", op.summary, ""]
    from archc.ops import REGISTRY

    lines.append(f"*family* {REGISTRY.family[op.name]} · *role* {op.role} · *tensor inputs* `{_inputs(op)}`")
    lines.append("")
    rows = _rows(op)
    if rows:
        lines += ["| parameter | type | default | meaning |", "| --- | --- | --- | --- |"]
        lines += [f"| `{n}` | {t} | {'required' if d == 'required' else f'`{d}`'} | {m} |" for n, t, d, m in rows]
        lines.append("")
    doc = (op.cost.__doc__ or "").strip()
    if doc:
        lines += ["**Cost.** " + " ".join(doc.split()), ""]
    weights = _example_weights(op)
    if weights:
        doc = " ".join((op.weights.__doc__ or "").split())
        lines += [f"**Weights** at {_example_text(op)}, width 64{': ' + doc if doc else ''} Classes: "
                  "docs/compression.md; init roles: docs/backends.md.", "",
                  "| weight | shape | class | init | pruned along |", "| --- | --- | --- | --- | --- |"]
        seen = set()
        for w in weights:
            name = re.sub(r"^(experts|shared)\.\d+\.", r"\1.{i}.", w.name)
            if name in seen:
                continue
            seen.add(name)
            quant = "quantized" if w.cls in QUANTIZED_BY_DEFAULT else "fp32"
            cuts = ", ".join(f"{k} (axis {a})" for k, a in w.cuts)
            lines.append(f"| `{name}` | {list(w.shape)} | {w.cls} ({quant}){' buffer' if w.buffer else ''} "
                         f"| {w.init} | {cuts} |")
        lines.append("")
    if op.kind == "layer":
        lines += [parallel_text(op), ""]
    return "\n".join(lines)


_CONTEXT = {"pointwise": "runs as it is (it mixes no positions)",
            "ring": "ring attention (key/value blocks pass around the ranks)",
            "state": "state passing (each rank scans its chunk from the state the previous rank hands on)"}
_OUTPUT = {"sum": "partial sums all-reduced (reduce-scattered under sequence parallelism)",
           "vocab": "logits kept split by vocabulary (parallel cross-entropy)",
           "all_to_all": "tokens sent to their experts' ranks and back (all-to-all)"}


def _generic(name: str) -> str:
    """`experts.3.up_proj.weight` -> `experts.{i}.up_proj.weight`."""
    return re.sub(r"^(experts|shared)\.\d+\.", r"\1.{i}.", name)


def parallel_text(op: OpDef) -> str:
    """The op's parallelism rule at the example, two ranks (docs/distributed.md explains them)."""
    from archc.ir.sharding import CannotShard
    from archc.ir.types import TensorType, hidden

    p = op.params(**example_params(op))
    ins = [TensorType(shape=("batch", "seq"), dtype="int")] if op.int_inputs else [hidden("batch", "seq", 64)]
    rule = op.parallel(p, ins)
    parts = []
    for kind, fn in (("Tensor", rule.tensor), ("Expert", rule.expert)):
        if fn is None:
            continue
        try:
            s = fn(2)
        except CannotShard as e:
            parts.append(f"{kind}-parallel: not at 2 ranks here ({e}).")
            continue
        names = dict.fromkeys(
            f"`{_generic(n)}` axis {v.axis}" + (f" (parts {list(v.parts)})" if v.parts else "")
            for n, v in s.weights.items())
        split = ", ".join(names)
        owned = f"experts owned whole ({s.units} over the ranks)" if s.owned else ""
        text = f"{kind}-parallel by {s.unit} ({s.units} at the example): " + (split or owned)
        if s.state:
            text += "; state " + ", ".join(f"`{n}` axis {v.axis}" for n, v in s.state.items())
        text += f"; output {_OUTPUT[s.output]}"
        if s.reductions:
            text += "; inside, all-reduces of " + ", ".join(f"{r.what} ({r.elements} a token)" for r in s.reductions)
        parts.append(text + ".")
    if rule.tensor is None:
        why = rule.why_replicated or "no sharding rule"
        parts.append(f"Tensor-parallel: replicated ({why}).")
    context = rule.context
    if context == "none" and not rule.why_context and op.causal(p, ins) is None and not op.takes_block:
        context = "pointwise"
    parts.append("Split sequence: " + (_CONTEXT.get(context) or f"not supported ({rule.why_context or 'it mixes positions'})")
                 + ".")
    return "**Parallel** (docs/distributed.md). " + " ".join(parts)


def _example_text(op: OpDef) -> str:
    params = example_params(op)
    return f"`{op.name}({', '.join(f'{k}={value_text(v)}' for k, v in params.items())})`"


#: Values for the required parameters of each op that has them, so that the reference can list
#: the op's declared weights at an example (hidden states of width 64).
EXAMPLE_PARAMS: dict[str, dict[str, Any]] = {
    "attention": {"heads": 4}, "bigbird_attention": {"heads": 4}, "cls_head": {"classes": 2}, "scale": {"by": 0.5},
    "compressive_memory": {"heads": 4}, "embed": {"vocab": 256, "d": 64},
    "gated_deltanet": {"heads": 4, "head_dim": 16}, "geglu": {"hidden": 128}, "groupnorm": {"groups": 4},
    "gru": {"hidden": 64}, "latent_attention": {"latents": 8}, "learned_pos": {"max_len": 128},
    "linear": {"out": 64}, "linear_attention": {"heads": 4}, "linformer_attention": {"heads": 4, "max_len": 128},
    "longformer_attention": {"heads": 4, "window": 8}, "lstm": {"hidden": 64}, "mlp": {"hidden": 128},
    "moe": {"experts": 4, "expert": {"op": "swiglu", "params": {"hidden": 128}}},
    "performer_attention": {"heads": 4}, "retention": {"heads": 4}, "rwkv_channel_mix": {"hidden": 128},
    "swiglu": {"hidden": 128}, "token_cls_head": {"classes": 2}, "crf_head": {"classes": 3}, "ctc_head": {"classes": 3}, "lm_head": {"vocab": 256},
    "item": {"index": 0}, "linear_act": {"out": 64, "act": "gelu"},
}


def example_params(op: OpDef) -> dict[str, Any]:
    """The record's own `example`, else `EXAMPLE_PARAMS` of the op or of the op it fuses (a packed
    op takes its op's parameters)."""
    if op.example:
        return op.example
    return EXAMPLE_PARAMS.get(op.name, EXAMPLE_PARAMS.get(op.fuses[0], {}) if op.fuses else {})


def _example_weights(op: OpDef) -> list:
    """The op's declared weights at `EXAMPLE_PARAMS`, on hidden states of width 64 (token ids
    for `embed`); none for components (position schemes are weights of the attention using them)."""
    from archc.ir.types import TensorType, hidden

    if op.kind == "component":
        return []
    p = op.params(**example_params(op))
    ins = [TensorType(shape=("batch", "seq"), dtype="int")] if op.int_inputs else [hidden("batch", "seq", 64)]
    return list(op.weights(p, ins))


def op_text(op: OpDef) -> str:
    """One op for the terminal (`archc ops NAME`): values as a spec writes them, so they can be
    pasted into one."""
    lines = [f"{op.name}: {op.summary}", f"  tensor inputs: {_inputs(op)}"]
    rows = _rows(op)
    if rows:
        w_name, w_type = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
        lines.append("  parameters:")
        for n, t, d, m in rows:
            default = "required" if d == "required" else f"default {d}"
            lines.append(f"    {n:<{w_name}}  {t:<{w_type}}  {default}" + (f" — {m}" if m else ""))
    doc = (op.cost.__doc__ or "").strip()
    if doc:
        lines.append("  cost: " + " ".join(doc.split()))
    example = ", ".join(f"{n}=..." for n, _, d, _ in rows if d == "required")
    if op.kind == "layer":
        lines.append(f"  e.g.  {op.name}({', '.join(op.inputs)}{', ' + example if example else ''})")
    return "\n".join(lines)


def ops_markdown() -> str:
    from archc.ops import REGISTRY

    out = ["# Op catalog", "",
           "Generated from the registry by `python -m archc.docs_gen`; do not edit by hand. "
           "`archc ops NAME` prints the same entry.", "",
           "Cost conventions (see `archc/ir/cost.py`): parameters are exact; FLOPs are forward FLOPs per "
           "token (2·m·n·k per matmul, attention adds 4·T_eff·H·head_dim); activation bytes are per "
           "token for training; state is per sequence at the costed context.", ""]
    by_family: dict[str, list[OpDef]] = {}
    for op in REGISTRY.values():
        by_family.setdefault(REGISTRY.family[op.name], []).append(op)
    for family in sorted(by_family):
        out += [f"## {family}", ""]
        for op in sorted(by_family[family], key=lambda o: o.name):
            out.append(op_reference(op))
    return "\n".join(out).rstrip() + "\n"


def errors_markdown() -> str:
    from archc.explain import EXPLANATIONS

    out = ["# Diagnostics", "",
           "Generated from `archc/explain.py` by `python -m archc.docs_gen`. `archc explain CODE` prints "
           "one entry. Every diagnostic has a stable code, a message, `file:line:col`, the source line "
           "with a caret, and usually a hint; `archc check --format json` emits them in the schema of "
           "`terraform validate -json`.", ""]
    for code, (title, body) in sorted(EXPLANATIONS.items()):
        out += [f"## {code}: {title}", "", body.strip(), ""]
    return "\n".join(out).rstrip() + "\n"


def write_all(root: Path) -> None:
    from archc.ops.registry import catalog_source

    (root / "docs" / "ops.md").write_text(ops_markdown())
    (root / "docs" / "errors.md").write_text(errors_markdown())
    (root / "archc" / "ops" / "_catalog.py").write_text(catalog_source())


if __name__ == "__main__":
    write_all(Path(__file__).resolve().parent.parent)
