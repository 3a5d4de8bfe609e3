"""Top-level items, includes (relative, contained in the spec's folder, cycle- and depth-checked),
statement bodies and deployment sections.

A mixin of `Lowering` (`lower.py`): it uses the lowering's diagnostics, scopes and nodes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from archc.dsl import ast
from archc.errors import ArchError, Span, did_you_mean
from archc.frontend.common import MAX_INCLUDE_DEPTH, pydantic_message
from archc.frontend.values import Block, Poison, SectionCall, Tensor
from archc.ir.graph import Graph
from archc.ir.sections import SECTIONS


class Statements:
    # ---- includes and top-level items ----
    def top_level(self, item: ast.Stmt, env: dict[str, Any], file: str, depth: int, seen: tuple[str, ...]) -> None:
        if isinstance(item, ast.Include):
            self.include(item, env, file, depth, seen)
        elif isinstance(item, ast.Assign):
            v = self.eval(item.value, env)
            if isinstance(v, Tensor):
                self.error("ARC0302", "top-level definitions are constants; tensors live inside a model", item.span)
            env[item.name] = v
        elif isinstance(item, ast.BlockDef):
            env[item.name] = Block(item, env.copy())
        elif isinstance(item, ast.ModelDef):
            self.error("ARC0705", "an included file may define blocks and constants, not a model", item.span)
        elif isinstance(item, ast.Section):
            self.error("ARC0410", f"`{item.kind}` sections go inside the model", item.span)


    def include(self, inc: ast.Include, env: dict[str, Any], file: str, depth: int, seen: tuple[str, ...]) -> None:
        from archc.dsl.parser import MAX_FILE_BYTES, parse

        root = Path(self.module.path).resolve().parent
        raw = Path(inc.path)
        if raw.is_absolute() or inc.path.startswith("~"):
            self.error("ARC0701", f"include path `{inc.path}` is absolute", inc.span,
                       "includes are relative to the including file and stay inside the spec's folder")
            return
        target = (Path(file).resolve().parent / raw).resolve()
        if root != target and root not in target.parents:
            self.error("ARC0701", f"include `{inc.path}` leaves the spec's folder tree ({root})", inc.span,
                       "includes may only reach files in the main spec's folder or below it")
            return
        if depth + 1 > MAX_INCLUDE_DEPTH:
            self.error("ARC0704", f"includes nested deeper than {MAX_INCLUDE_DEPTH}", inc.span)
            return
        if str(target) in seen:
            self.error("ARC0703", f"include cycle: {' -> '.join(Path(s).name for s in (*seen, str(target)))}",
                       inc.span, "remove one of the includes")
            return
        if not target.is_file():
            self.error("ARC0702", f"included file `{inc.path}` not found", inc.span)
            return
        if target.stat().st_size > MAX_FILE_BYTES:
            self.error("ARC0105", f"included file `{inc.path}` is larger than {MAX_FILE_BYTES:,} bytes", inc.span)
            return
        try:
            text = target.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            self.error("ARC0702", f"cannot read included file `{inc.path}`: {e}", inc.span)
            return
        shown = str(Path(file).parent / raw) if not Path(file).is_absolute() else str(target)
        self.sources[shown] = text
        try:
            sub = parse(text, shown)
        except ArchError as e:
            self.diags.extend(e.diagnostics)
            return
        for item in sub.items:
            self.top_level(item, env, str(target), depth + 1, (*seen, str(target)))


    # ---- statements ----
    def run_body(self, body: tuple[ast.Stmt, ...], env: dict[str, Any], span: Span,
                 allow_sections: bool = False, graph: Graph | None = None) -> list[tuple[Any, Span]] | None:
        result: list[tuple[Any, Span]] | None = None
        for stmt in body:
            if result is not None and not isinstance(stmt, ast.Section):
                self.error("ARC0410", "only deployment sections may follow `return`", stmt.span,
                           "move this statement before the `return`")
                continue
            if isinstance(stmt, ast.Assign):
                env[stmt.name] = self.eval(stmt.value, env)
            elif isinstance(stmt, ast.BlockDef):
                env[stmt.name] = Block(stmt, env.copy())
            elif isinstance(stmt, ast.Return):
                result = [(self.eval(e, env), e.span) for e in stmt.values]
            elif isinstance(stmt, ast.Section):
                if not allow_sections:
                    self.error("ARC0410", f"`{stmt.kind}` sections go at the model's top level", stmt.span)
                else:
                    assert graph is not None
                    self.section(stmt, env, graph)
            elif isinstance(stmt, ast.Include):
                self.error("ARC0410", "`include` goes at the top of the file", stmt.span)
            elif isinstance(stmt, ast.ModelDef):
                self.error("ARC0406", "models cannot be nested", stmt.span)
        return result


    def section(self, sec: ast.Section, env: dict[str, Any], graph: Graph) -> None:
        key = sec.kind if sec.name is None else f"{sec.kind}.{sec.name}"
        if key in graph.sections:
            self.error("ARC0410", f"section `{key}` appears twice", sec.span)
            return
        values: dict[str, Any] = {}
        spans: dict[str, Span] = {}
        for a in sec.items:
            v = self.eval(a.value, env, in_section=True)
            if isinstance(v, Poison):
                return
            values[a.name] = v.as_param() if isinstance(v, SectionCall) else v
            spans[a.name] = a.span
        if sec.kind == "export":
            values.setdefault("target", sec.name or "onnx")
        schema = SECTIONS[sec.kind]
        if sec.kind == "parallel":
            self.diags.warning("ARC0502", "the `parallel` section constrains `archc plan` only: archc builds, "
                               "trains and exports single-device models", sec.span,
                               "keep it for the record, or remove it to silence this warning")
        try:
            graph.sections[key] = schema(**values).model_dump()
        except ValidationError as e:
            for err in e.errors():
                loc = str(err["loc"][0]) if err["loc"] else ""
                span = spans.get(loc, sec.span)
                if err["type"] == "extra_forbidden":
                    self.error("ARC0201", f"`{sec.kind}` has no setting `{loc}`", span,
                               did_you_mean(loc, list(schema.model_fields)))
                else:
                    self.error("ARC0202", f"`{sec.kind}.{loc}`: {pydantic_message(err)}", span)
