"""The AST of the .arch language: frozen dataclasses, each with the `span` it came from.

The AST is what the parser hands to the lowering (`archc.frontend.lower`) and what the formatter
prints. It keeps the user's spelling of literals (`1e4` stays `1e4`) so `archc fmt` never
rewrites numbers. `Module.comments` holds every comment with its position: comments are not
part of the tree, the formatter re-attaches them to the statement they precede.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from archc.errors import Span


@dataclass(frozen=True, slots=True)
class Node:
    span: Span = field(compare=False, repr=False)


# ---- expressions -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Name(Node):
    id: str


@dataclass(frozen=True, slots=True)
class Int(Node):
    value: int
    text: str = field(compare=False)


@dataclass(frozen=True, slots=True)
class Float(Node):
    value: float
    text: str = field(compare=False)


@dataclass(frozen=True, slots=True)
class Size(Node):
    """A byte size such as `80GB` (decimal units) or `16GiB` (binary units)."""

    bytes: int
    text: str = field(compare=False)


@dataclass(frozen=True, slots=True)
class String(Node):
    value: str


@dataclass(frozen=True, slots=True)
class Bool(Node):
    value: bool


@dataclass(frozen=True, slots=True)
class NoneLit(Node):
    pass


@dataclass(frozen=True, slots=True)
class List(Node):
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class BinOp(Node):
    op: str  # one of + - * / // % **
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Neg(Node):
    operand: Expr


@dataclass(frozen=True, slots=True)
class Kwarg(Node):
    name: str
    value: Expr


@dataclass(frozen=True, slots=True)
class Call(Node):
    func: Expr
    args: tuple[Expr, ...]
    kwargs: tuple[Kwarg, ...]


Expr = Name | Int | Float | Size | String | Bool | NoneLit | List | BinOp | Neg | Call

# ---- statements --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Assign(Node):
    name: str
    value: Expr


@dataclass(frozen=True, slots=True)
class Return(Node):
    values: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Param(Node):
    name: str
    default: Expr | None


@dataclass(frozen=True, slots=True)
class BlockDef(Node):
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]


@dataclass(frozen=True, slots=True)
class Section(Node):
    """`export onnx { ... }`, `parallel { ... }`, `train { ... }`: deployment settings."""

    kind: str
    name: str | None
    items: tuple[Assign, ...]


@dataclass(frozen=True, slots=True)
class Include(Node):
    path: str


@dataclass(frozen=True, slots=True)
class ModelDef(Node):
    name: str
    inputs: tuple[str, ...]
    body: tuple[Stmt, ...]


Stmt = Assign | Return | BlockDef | Section | Include | ModelDef


@dataclass(frozen=True, slots=True)
class Comment:
    line: int
    col: int
    text: str


@dataclass(frozen=True, slots=True)
class Module:
    path: str
    items: tuple[Stmt, ...]
    comments: tuple[Comment, ...] = field(default=(), compare=False)
