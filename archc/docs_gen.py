"""Generated reference documents: docs/ops.md from the op registry, docs/errors.md from the codes.

`python -m archc.docs_gen` rewrites both; a test checks that the committed files are current.
"""

from __future__ import annotations

from pathlib import Path

from archc.ops.registry import OpDef


def op_reference(op: OpDef) -> str:
    lines = [f"### `{op.name}`", "", op.summary, ""]
    inputs = ", ".join([*op.inputs, *(f"{i}?" for i in op.optional_inputs)])
    if op.takes_block:
        inputs += ", block=<block>"
    lines.append(f"*category* {op.category} · *kind* {op.kind} · *tensor inputs* `{inputs or '-'}`")
    lines.append("")
    fields = op.params.model_fields
    if fields:
        lines += ["| parameter | type | default | meaning |", "| --- | --- | --- | --- |"]
        for name, f in fields.items():
            default = "required" if f.is_required() else f"`{f.default!r}`".replace("None", "none")
            ann = str(f.annotation).replace("typing.", "").replace("NoneType", "None")
            if hasattr(f.annotation, "__name__") and "[" not in ann:
                ann = f.annotation.__name__  # type: ignore[union-attr]
            lines.append(f"| `{name}` | `{ann}` | {default} | {f.description or ''} |")
        lines.append("")
    doc = (op.cost.__doc__ or "").strip()
    if doc:
        lines += ["**Cost.** " + " ".join(doc.split()), ""]
    return "\n".join(lines)


def ops_markdown() -> str:
    from archc.ops import REGISTRY

    out = ["# Op catalog", "",
           "Generated from the registry by `python -m archc.docs_gen`; do not edit by hand. "
           "`archc ops NAME` prints the same entry.", "",
           "Cost conventions (see `archc/ir/cost.py`): parameters are exact; FLOPs are forward FLOPs per "
           "token (2·m·n·k per matmul, attention adds 4·T_eff·H·head_dim); activation bytes are per "
           "token for training; state is per sequence at the costed context.", ""]
    by_cat: dict[str, list[OpDef]] = {}
    for op in REGISTRY.values():
        by_cat.setdefault(op.category, []).append(op)
    for cat in sorted(by_cat):
        out += [f"## {cat}", ""]
        for op in sorted(by_cat[cat], key=lambda o: o.name):
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
    (root / "docs" / "ops.md").write_text(ops_markdown())
    (root / "docs" / "errors.md").write_text(errors_markdown())


if __name__ == "__main__":
    write_all(Path(__file__).resolve().parent.parent)
