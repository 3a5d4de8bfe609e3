"""AST -> canonical .arch text (`archc fmt`).

One statement per line, two-space indents, spaces around binary operators and `=`, no spaces
around keyword `=`, minimal parentheses, a call broken one argument per line (with a trailing
comma) when a line passes `WIDTH` columns. The user's spelling of literals (`1e4`, `80GB`) and
every comment are kept: a comment on a statement's last line stays at its end, other comments
become own-line comments before the statement they preceded. Single blank lines between
statements are kept; top-level definitions are separated by one blank line.

Formatting is idempotent, and `parse(format_module(m))` lowers to the same IR as `m` (tested on
every spec and on generated inputs).
"""

from __future__ import annotations

from archc.dsl import ast

WIDTH = 100
INDENT = "  "

_PREC = {"+": 1, "-": 1, "*": 2, "/": 2, "//": 2, "%": 2, "**": 4}
_NEG, _POSTFIX, _ATOM = 3, 5, 6


def _prec(e: ast.Expr) -> int:
    if isinstance(e, ast.BinOp):
        return _PREC[e.op]
    if isinstance(e, ast.Neg):
        return _NEG
    if isinstance(e, ast.Call):
        return _POSTFIX
    return _ATOM


def _string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def expr(e: ast.Expr) -> str:
    """One-line text of an expression."""
    if isinstance(e, ast.Name):
        return e.id
    if isinstance(e, ast.Int | ast.Float | ast.Size):
        return e.text
    if isinstance(e, ast.String):
        return _string(e.value)
    if isinstance(e, ast.Bool):
        return "true" if e.value else "false"
    if isinstance(e, ast.NoneLit):
        return "none"
    if isinstance(e, ast.List):
        return "[" + ", ".join(expr(i) for i in e.items) + "]"
    if isinstance(e, ast.Neg):
        inner = expr(e.operand)
        return f"-({inner})" if _prec(e.operand) < _NEG else f"-{inner}"
    if isinstance(e, ast.BinOp):
        left, right = _binop_sides(e)
        return f"{left} {e.op} {right}"
    if isinstance(e, ast.Call):
        return _callee(e) + "(" + ", ".join(_args(e)) + ")"
    raise AssertionError(f"unknown expression {e!r}")


def _binop_sides(e: ast.BinOp) -> tuple[str, str]:
    p = _PREC[e.op]
    left, right = expr(e.left), expr(e.right)
    if e.op == "**":  # right-associative; the left operand must be a postfix expression
        if _prec(e.left) < _POSTFIX:
            left = f"({left})"
        if _prec(e.right) < _NEG:
            right = f"({right})"
        return left, right
    if _prec(e.left) < p:
        left = f"({left})"
    if _prec(e.right) <= p:
        right = f"({right})"
    return left, right


def _callee(e: ast.Call) -> str:
    f = expr(e.func)
    return f"({f})" if _prec(e.func) < _POSTFIX else f


def _args(e: ast.Call) -> list[str]:
    return [expr(a) for a in e.args] + [f"{k.name}={expr(k.value)}" for k in e.kwargs]


def _wrapped(e: ast.Expr, indent: str, used: int) -> str:
    """Text of `e` starting at column `used`, broken over lines if it does not fit."""
    flat = expr(e)
    if used + len(flat) <= WIDTH:
        return flat
    if isinstance(e, ast.Call):
        inner = indent + INDENT
        lines = [_callee(e) + "("]
        items: list[tuple[str, ast.Expr]] = [("", a) for a in e.args] + [(f"{k.name}=", k.value) for k in e.kwargs]
        for prefix, a in items:
            lines.append(inner + prefix + _wrapped(a, inner, len(inner) + len(prefix)) + ",")
        lines.append(indent + ")")
        return "\n".join(lines)
    if isinstance(e, ast.BinOp) and e.op != "**":
        left, right = _binop_sides(e)
        if not right.startswith("(") and isinstance(e.right, ast.Call):
            head = f"{left} {e.op} "
            return head + _wrapped(e.right, indent, used + len(head))
    return flat


class _Printer:
    def __init__(self, module: ast.Module) -> None:
        self.comments = sorted(module.comments, key=lambda c: (c.line, c.col))
        self.i = 0
        self.out: list[str] = []
        self.last_line = 0  # last source line emitted

    def pending_before(self, line: int) -> list[ast.Comment]:
        taken = []
        while self.i < len(self.comments) and self.comments[self.i].line < line:
            taken.append(self.comments[self.i])
            self.i += 1
        return taken

    def trailing_on(self, line: int) -> list[ast.Comment]:
        taken = []
        while self.i < len(self.comments) and self.comments[self.i].line == line:
            taken.append(self.comments[self.i])
            self.i += 1
        return taken

    def emit_comments(self, comments: list[ast.Comment], indent: str, first_in_body: bool) -> bool:
        for c in comments:
            if self.out and not first_in_body and c.line > self.last_line + 1 and self.out[-1] != "":
                self.out.append("")
            self.out.append(indent + c.text.rstrip())
            self.last_line = c.line
            first_in_body = False
        return first_in_body

    def body(self, stmts: tuple[ast.Stmt, ...], indent: str, end_line: int, top: bool = False) -> None:
        first = True
        prev: ast.Stmt | None = None
        for s in stmts:
            comments = self.pending_before(s.span.line)
            separate = top and prev is not None and (
                isinstance(s, ast.BlockDef | ast.ModelDef) or isinstance(prev, ast.BlockDef | ast.ModelDef))
            start = comments[0].line if comments else s.span.line
            if self.out and not first and self.out[-1] != "" and (separate or start > self.last_line + 1):
                self.out.append("")
            self.emit_comments(comments, indent, True)
            if comments and s.span.line > self.last_line + 1 and self.out[-1] != "":
                self.out.append("")
            self.stmt(s, indent)
            first = False
            prev = s
        self.emit_comments(self.pending_before(end_line), indent, first)

    def line(self, text: str, src_line: int) -> None:
        trailing = self.trailing_on(src_line)
        if trailing:
            text += "  " + "  ".join(c.text.rstrip() for c in trailing)
        self.out.append(text)
        self.last_line = src_line

    def stmt(self, s: ast.Stmt, indent: str) -> None:
        if isinstance(s, ast.Assign | ast.Return | ast.Include):
            # comments inside a multi-line statement move above it
            self.emit_comments(self.pending_before(s.span.end_line), indent, True)
            if isinstance(s, ast.Assign):
                head = f"{indent}{s.name} = "
                text = head + _wrapped(s.value, indent, len(head))
            elif isinstance(s, ast.Return):
                head = f"{indent}return "
                text = head + (_wrapped(s.values[0], indent, len(head)) if len(s.values) == 1
                               else ", ".join(expr(v) for v in s.values))
            else:
                text = f"{indent}include {_string(s.path)}"
            self.line(text, s.span.end_line)
            return
        if isinstance(s, ast.BlockDef):
            params = ", ".join(p.name if p.default is None else f"{p.name}={expr(p.default)}" for p in s.params)
            header = f"{indent}block {s.name}({params}) {{"
        elif isinstance(s, ast.ModelDef):
            header = f"{indent}model {s.name}({', '.join(s.inputs)}) {{"
        else:
            assert isinstance(s, ast.Section)
            header = f"{indent}{s.kind}{'' if s.name is None else ' ' + s.name} {{"
        self.emit_comments(self.pending_before(s.span.line), indent, True)
        body = s.items if isinstance(s, ast.Section) else s.body
        first_line = body[0].span.line if body else s.span.end_line
        self.line(header, s.span.line if first_line > s.span.line else -1)
        self.body(body, indent + INDENT, s.span.end_line)
        self.line(f"{indent}}}", s.span.end_line)


def format_module(module: ast.Module) -> str:
    p = _Printer(module)
    p.body(module.items, "", 10**9, top=True)
    text = "\n".join(p.out).rstrip("\n")
    return text + "\n" if text else ""


def format_text(text: str, path: str = "<string>") -> str:
    from archc.dsl.parser import parse

    return format_module(parse(text, path))
