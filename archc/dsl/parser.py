"""Text -> AST. `parse(text, path)` returns an `ast.Module` or raises `ArchError`.

The LALR parser builds the tree iteratively and `ToAst` walks it without recursion, so deep
nesting cannot overflow Python's stack; nesting past `MAX_DEPTH` is refused with a diagnostic,
since later stages walk the AST recursively. The parser recovers from syntax errors so that one
run reports every independent error: after an error we skip tokens and stay quiet for the rest of
that line, which keeps one typo from cascading into a dozen reports.
"""

from __future__ import annotations

import functools
from contextvars import ContextVar
from pathlib import Path

from lark import Lark, Token, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError
from lark.visitors import Transformer_NonRecursive

from archc.dsl import ast
from archc.errors import Collector, Diagnostic, Span

#: The only grammar (`grammar/arch.lark`, linked into the package as `archc/grammar`).
GRAMMAR_PATH = Path(__file__).resolve().parent.parent / "grammar" / "arch.lark"

#: Nesting deeper than this is refused: later stages walk the AST recursively.
MAX_DEPTH = 64
#: A spec file larger than this is refused before parsing.
MAX_FILE_BYTES = 2_000_000
#: Stop reporting syntax errors after this many.
MAX_SYNTAX_ERRORS = 20

_SIZE_UNITS = {
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
}

_TOKEN_NAMES = {
    "NAME": "name", "INT": "integer", "FLOAT": "number", "SIZE": "size", "STRING": "string",
    "$END": "end of file",
}
# Order in which expected tokens are listed: closers and separators first, they are the usual fix.
_PRIORITY = {")": 0, ",": 1, "}": 2, "]": 3, "=": 4, "(": 5}


class _TooDeep(Exception):
    def __init__(self, span: Span) -> None:
        self.span = span


class ToAst(Transformer_NonRecursive):
    """Lark tree -> `archc.dsl.ast` nodes, walked without recursion (deep input cannot overflow)."""

    def __init__(self, file: str = "<string>") -> None:
        super().__init__()
        self.file = file
        #: Nesting depth of the expression nodes built so far, keyed by id (one transformer per parse).
        self.depths: dict[int, int] = {}

    # Unmapped rules are bugs in the grammar/transformer pair, never user errors.
    def __default__(self, data, children, meta):
        raise AssertionError(f"grammar rule {data!r} has no AST mapping")

    def _span(self, meta) -> Span:
        if getattr(meta, "empty", True):
            return Span(self.file, 1, 1, 1, 1)
        return Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    # ---- expressions ----
    @v_args(meta=True)
    def name(self, meta, children):
        return ast.Name(self._span(meta), str(children[0]))

    @v_args(meta=True)
    def int(self, meta, children):
        text = str(children[0])
        return ast.Int(self._span(meta), int(text.replace("_", "")), text)

    @v_args(meta=True)
    def float(self, meta, children):
        text = str(children[0])
        return ast.Float(self._span(meta), float(text), text)

    @v_args(meta=True)
    def size(self, meta, children):
        text = str(children[0])
        unit = text.lstrip("0123456789.")
        number = text[: len(text) - len(unit)]
        return ast.Size(self._span(meta), round(float(number) * _SIZE_UNITS[unit]), text)

    @v_args(meta=True)
    def string(self, meta, children):
        return ast.String(self._span(meta), _unescape(str(children[0])))

    @v_args(meta=True)
    def true(self, meta, children):
        return ast.Bool(self._span(meta), True)

    @v_args(meta=True)
    def false(self, meta, children):
        return ast.Bool(self._span(meta), False)

    @v_args(meta=True)
    def none(self, meta, children):
        return ast.NoneLit(self._span(meta))

    @v_args(meta=True)
    def list(self, meta, children):
        items = tuple(c for c in children if c is not None)
        return self._nest(ast.List(self._span(meta), items), *items)

    def _binop(op: str):
        @v_args(meta=True)
        def rule(self, meta, children):
            left, right = children
            return self._nest(ast.BinOp(self._span(meta), op, left, right), left, right)

        return rule

    add = _binop("+")
    sub = _binop("-")
    mul = _binop("*")
    div = _binop("/")
    floordiv = _binop("//")
    mod = _binop("%")
    pow = _binop("**")

    @v_args(meta=True)
    def neg(self, meta, children):
        return self._nest(ast.Neg(self._span(meta), children[0]), children[0])

    @v_args(meta=True)
    def kwarg(self, meta, children):
        return self._nest(ast.Kwarg(self._span(meta), str(children[0]), children[1]), children[1])

    def args(self, children):
        return [c for c in children if c is not None]

    @v_args(meta=True)
    def call(self, meta, children):
        func, arglist = children
        arglist = arglist or []
        args = tuple(a for a in arglist if not isinstance(a, ast.Kwarg))
        kwargs = tuple(a for a in arglist if isinstance(a, ast.Kwarg))
        return self._nest(ast.Call(self._span(meta), func, args, kwargs), func, *arglist)

    # ---- statements ----
    @v_args(meta=True)
    def const(self, meta, children):
        return ast.Assign(self._span(meta), str(children[0]), children[1])

    @v_args(meta=True)
    def return_(self, meta, children):
        return ast.Return(self._span(meta), tuple(children))

    def names(self, children):
        return tuple(str(c) for c in children if c is not None)

    def params(self, children):
        return tuple(c for c in children if c is not None)

    @v_args(meta=True)
    def param(self, meta, children):
        return ast.Param(self._span(meta), str(children[0]), children[1])

    @v_args(meta=True)
    def block(self, meta, children):
        name, params, *body = children
        return ast.BlockDef(self._span(meta), str(name), params or (), tuple(body))

    @v_args(meta=True)
    def model(self, meta, children):
        name, inputs, *body = children
        return ast.ModelDef(self._span(meta), str(name), inputs or (), tuple(body))

    @v_args(meta=True)
    def section(self, meta, children):
        kind, name, *items = children
        return ast.Section(self._span(meta), str(kind), None if name is None else str(name), tuple(items))

    @v_args(meta=True)
    def include(self, meta, children):
        return ast.Include(self._span(meta), _unescape(str(children[0])))

    def start(self, children):
        return tuple(children)

    def _nest(self, node: ast.Node, *children: object) -> ast.Node:
        depth = 1 + max((self.depths.get(id(c), 0) for c in children), default=0)
        if depth > MAX_DEPTH:
            raise _TooDeep(node.span)
        self.depths[id(node)] = depth
        return node


def _unescape(token: str) -> str:
    """The value of a string token: quotes dropped, \\" \\n \\\\ escapes decoded (the formatter's inverse)."""
    import re

    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), token[1:-1])


#: The comments of the parse in progress. Lark calls lexer callbacks fixed when the parser is
#: built, so the one shared parser appends to whatever list the current parse installed here: a
#: context variable, so that parses in other threads (or an include parsed while lowering) never
#: see each other's comments. The parser itself holds no per-parse state.
_COMMENTS: ContextVar[list[Token]] = ContextVar("archc_comments")


def _keep_comment(token: Token) -> Token:
    _COMMENTS.get().append(token)
    return token


@functools.cache
def _parser() -> Lark:
    return Lark.open(
        "../grammar/arch.lark", rel_to=__file__,
        parser="lalr",
        strict=True,  # shift/reduce conflicts and colliding terminals are grammar bugs
        propagate_positions=True,
        maybe_placeholders=True,
        lexer_callbacks={"COMMENT": _keep_comment},
        cache=True,
    )


def _token_name(t: str) -> str:
    if t in _TOKEN_NAMES:
        return _TOKEN_NAMES[t]
    try:
        term = _parser().get_terminal(t)
    except KeyError:
        return t.lower()
    return f"`{term.pattern.value}`" if term.pattern.type == "str" else t.lower()


def _expected(tokens: set[str]) -> str:
    names = sorted({_token_name(t) for t in tokens}, key=lambda n: (_PRIORITY.get(n.strip("`"), 9), n))
    if len(names) > 8:
        names = [*names[:8], "..."]
    return ", ".join(names)


def _syntax_diagnostic(err: UnexpectedInput, file: str) -> Diagnostic:
    line, col = max(err.line, 1), max(err.column, 1)
    if isinstance(err, UnexpectedCharacters):
        ch = err.char
        hint = "comments start with `#`" if ch == "/" else None
        if ch == "'":
            hint = 'strings use double quotes: "..."'
        return Diagnostic("ARC0101", f"unexpected character {ch!r}", Span(file, line, col, line, col + 1), hint)
    if isinstance(err, UnexpectedEOF) or (isinstance(err, UnexpectedToken) and err.token.type == "$END"):
        expected = getattr(err, "expected", set()) or set()
        return Diagnostic(
            "ARC0102", "unexpected end of file", Span(file, line, col, line, col + 1),
            f"expected {_expected(set(expected))}; is a `}}` or `)` missing?",
        )
    assert isinstance(err, UnexpectedToken)
    tok = err.token
    width = max(1, len(str(tok)))
    hint = f"expected {_expected(err.expected)}"
    if tok.type == "EQUAL":
        hint += "; keyword arguments are only allowed inside a call's parentheses"
    kind = _TOKEN_NAMES.get(tok.type, "token")
    return Diagnostic("ARC0103", f"unexpected {kind} `{tok}`",
                      Span(file, line, col, line, col + width), hint)


def parse(text: str, path: str = "<string>") -> ast.Module:
    """Parse .arch source text. Raises `ArchError` with every syntax error found."""
    diags = Collector()
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        diags.error("ARC0105", f"spec file is larger than {MAX_FILE_BYTES:,} bytes", Span(path, 1, 1, 1, 1),
                    "split it with `include`, or use `repeat` instead of writing layers out")
        diags.raise_if_errors()
    if "\x00" in text:
        diags.error("ARC0101", "spec contains a NUL byte", Span(path, 1, 1, 1, 1), "is this a binary file?")
        diags.raise_if_errors()

    parser = _parser()
    transformer = ToAst(path)
    comments: list[Token] = []
    reset = _COMMENTS.set(comments)
    last_line = [0]

    def on_error(err: UnexpectedInput) -> bool:
        if len(diags.items) >= MAX_SYNTAX_ERRORS:
            return False
        if err.line != last_line[0]:  # one report per line: later ones are usually cascades
            diags.extend([_syntax_diagnostic(err, path)])
            last_line[0] = err.line
        return not (isinstance(err, UnexpectedToken) and err.token.type == "$END")

    try:
        tree = parser.parse(text, on_error=on_error)
        items = () if diags.items else transformer.transform(tree)
    except _TooDeep as e:
        diags.error("ARC0104", f"expression nested deeper than {MAX_DEPTH} levels", e.span,
                    "name intermediate values with assignments")
        items = ()
    except VisitError as e:
        if isinstance(e.orig_exc, _TooDeep):
            diags.error("ARC0104", f"expression nested deeper than {MAX_DEPTH} levels", e.orig_exc.span,
                        "name intermediate values with assignments")
            items = ()
        else:
            raise
    except UnexpectedInput as e:
        if not diags.items or e.line != last_line[0]:
            diags.extend([_syntax_diagnostic(e, path)])
        items = ()
    except (ValueError, OverflowError) as e:  # e.g. a float literal that overflows
        diags.error("ARC0101", f"bad literal: {e}", Span(path, 1, 1, 1, 1))
        items = ()
    finally:
        _COMMENTS.reset(reset)
    diags.raise_if_errors()
    return ast.Module(path, tuple(items), tuple(ast.Comment(c.line, c.column, str(c)) for c in comments))

