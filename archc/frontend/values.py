"""The values an .arch expression evaluates to during lowering (they never reach the IR).

Constants fold to Python values; tensors are references to IR nodes; blocks, `repeat(...)` and
`pattern(...)` are callables applied to tensors; an op called without tensors (`rope(theta=1e4)`,
`swiglu(hidden=512)`) is an `OpSpec` that another op takes as a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from archc.dsl import ast
from archc.errors import Span
from archc.ir.types import TensorType


@dataclass(frozen=True, slots=True)
class Tensor:
    node: str
    type: TensorType


@dataclass(frozen=True, slots=True)
class Poison:
    """The value of an expression that already produced a diagnostic; absorbs further errors."""


@dataclass(frozen=True, slots=True)
class OpSpec:
    op: str
    params: dict[str, Any]
    span: Span

    def as_param(self) -> dict[str, Any]:
        return {"op": self.op, "params": self.params}


@dataclass(frozen=True, slots=True)
class SectionCall:
    """`adamw(lr=3e-4)` inside a deployment section: a named, validated-later setting."""

    fn: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def as_param(self) -> dict[str, Any]:
        return {"fn": self.fn, "args": list(self.args), "kwargs": self.kwargs}


@dataclass(slots=True)
class Block:
    defn: ast.BlockDef
    closure: dict[str, Any]
    bound: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.defn.name


@dataclass(frozen=True, slots=True)
class Repeat:
    count: int
    block: Block | Repeat | Pattern
    name: str | None
    span: Span


@dataclass(frozen=True, slots=True)
class Pattern:
    layout: str
    blocks: dict[str, Block | Repeat | Pattern]
    name: str | None
    span: Span




def describe(v: Any) -> str:
    """How a value is named in diagnostics."""
    if isinstance(v, Tensor):
        return f"a tensor {v.type}"
    if isinstance(v, Block):
        return f"the block `{v.name}`"
    if isinstance(v, Repeat | Pattern):
        return "a layer stack"
    if isinstance(v, OpSpec):
        return f"an op spec `{v.op}(...)`"
    if isinstance(v, bool):
        return "a bool"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    if v is None:
        return "none"
    return type(v).__name__
