"""Edits of a parsed spec that keep everything else as the user wrote it (`archc prune`).

`set_call_params` changes settings of op calls, found by where they start: a setting passed by
keyword is replaced, one passed positionally is replaced in place, a missing one is added as a
keyword; a nested op spec (`expert=swiglu(hidden=688)`) is edited inside. A setting written as
a constant that nothing else reads (`heads = 8` … `attention(x, heads=heads)`) changes at the
constant instead, so the spec keeps its names and no stale value is left behind. `set_repeat_count`
changes the count of a `repeat(n, …)`. The module is then formatted by `archc fmt`'s printer,
comments kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from archc.dsl import ast
from archc.errors import Span

#: (file, line, col) where a call starts, as the IR node's span records it
Where = tuple[str, int, int]


def literal(value: Any, span: Span) -> ast.Expr:
    """The AST of a Python value as a spec writes it."""
    if isinstance(value, bool):
        return ast.Bool(span, value)
    if isinstance(value, int):
        return ast.Int(span, value, str(value))
    if isinstance(value, float):
        return ast.Float(span, value, repr(value))
    if isinstance(value, str):
        return ast.String(span, value)
    if value is None:
        return ast.NoneLit(span)
    if isinstance(value, list | tuple):
        return ast.List(span, tuple(literal(v, span) for v in value))
    raise TypeError(f"no literal for {value!r}")


def _callee(call: ast.Call) -> str:
    return call.func.id if isinstance(call.func, ast.Name) else ""


def _edit_call(call: ast.Call, changes: dict[str, Any], positional: Callable[[str], list[str]],
               own: dict[str, Any] | None = None) -> ast.Call:
    """`call` with the settings in `changes` set; a dict value {"params": {...}} edits a nested
    op spec's settings. `own` maps the constants read only here to None: a setting that reads
    one gets its value put there instead (filled in) and the call keeps the name."""
    own = {} if own is None else own
    names = positional(_callee(call))
    args, kwargs = list(call.args), list(call.kwargs)
    for name, value in changes.items():
        k = next((i for i, kw in enumerate(kwargs) if kw.name == name), None)
        pos = names.index(name) if name in names and names.index(name) < len(args) else None
        old = kwargs[k].value if k is not None else args[pos] if pos is not None else None
        if isinstance(value, dict):
            if not isinstance(old, ast.Call):
                raise ValueError(f"`{name}` of the call at {call.span} is not written as an op spec")
            new: ast.Expr = _edit_call(old, value.get("params", {}), positional, own)
        elif isinstance(old, ast.Name) and old.id in own and own[old.id] in (None, value):
            own[old.id] = value
            continue
        else:
            new = literal(value, call.span)
        if k is not None:
            kwargs[k] = dataclasses.replace(kwargs[k], value=new)
        elif pos is not None:
            args[pos] = new
        else:
            kwargs.append(ast.Kwarg(call.span, name, new))
    return dataclasses.replace(call, args=tuple(args), kwargs=tuple(kwargs))


def _walk(node: Any, fn: Callable[[Any], Any]) -> Any:
    """Rebuild `node` bottom-up, applying `fn` to every AST node (frozen dataclasses)."""
    if isinstance(node, tuple):
        return tuple(_walk(n, fn) for n in node)
    if not dataclasses.is_dataclass(node) or isinstance(node, ast.Comment):
        return node
    changed = {f.name: _walk(getattr(node, f.name), fn) for f in dataclasses.fields(node) if f.name != "span"}
    rebuilt = dataclasses.replace(node, **changed) if any(
        changed[k] is not getattr(node, k) for k in changed) else node
    return fn(rebuilt)


def set_call_params(module: ast.Module, edits: dict[Where, dict[str, Any]],
                    positional: Callable[[str], list[str]]) -> tuple[ast.Module, set[Where]]:
    """The module with each call at a `Where` given its settings; `positional(op)` names the
    op's positional parameters in order (tensor inputs first). Returns the module and the calls
    that were found."""
    found: set[Where] = set()
    own: dict[str, Any] = dict.fromkeys(_read_once(module))

    def fn(node: Any) -> Any:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):  # not `repeat(…)(x)`, which starts there too
            where = (node.span.file, node.span.line, node.span.col)
            if where in edits:
                found.add(where)
                return _edit_call(node, edits[where], positional, own)
        return node

    edited = _walk(module, fn)
    moved = {k: v for k, v in own.items() if v is not None}

    def constants(node: Any) -> Any:
        if isinstance(node, ast.Assign) and node.name in moved:
            return dataclasses.replace(node, value=literal(moved[node.name], node.value.span))
        return node

    return (_walk(edited, constants) if moved else edited), found


def _read_once(module: ast.Module) -> set[str]:
    """Constants assigned once, to a literal, and read exactly once in the whole module."""
    reads: dict[str, int] = {}
    assigns: dict[str, int] = {}
    literal_assigns: set[str] = set()

    def fn(node: Any) -> Any:
        if isinstance(node, ast.Name):
            reads[node.id] = reads.get(node.id, 0) + 1
        elif isinstance(node, ast.Assign):
            assigns[node.name] = assigns.get(node.name, 0) + 1
            if isinstance(node.value, ast.Int | ast.Float | ast.List):
                literal_assigns.add(node.name)
        return node

    _walk(module, fn)
    return {n for n in literal_assigns if assigns[n] == 1 and reads.get(n) == 1}


def set_repeat_count(module: ast.Module, where: Where, count: int) -> ast.Module:
    """The module with the `repeat(n, …)` call at `where` repeating `count` times."""

    def fn(node: Any) -> Any:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "repeat" \
                and (node.span.file, node.span.line, node.span.col) == where:
            return dataclasses.replace(node, args=(literal(count, node.span), *node.args[1:]))
        return node

    return _walk(module, fn)


__all__ = ["Where", "literal", "set_call_params", "set_repeat_count"]
