"""The op registry: everything the compiler knows about an op, in one record.

An `OpDef` carries the op's parameter schema (pydantic), its shape rule and its cost rule, which
is all the front end and `archc summary` need; backends attach their rules to the same record
(DESIGN.md §3). Family files under `archc/ops/` call `register` at import time, and
`archc/ops/__init__.py` imports them all, so passes and backends only ever look ops up by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from archc.ir.cost import Cost, CostCtx
from archc.ir.types import TensorType

Kind = Literal["layer", "component", "arith"]


class Params(BaseModel):
    """Base of every op's parameter schema: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class ShapeError(Exception):
    """Raised by a shape rule; lowering turns it into a diagnostic at the call (or `arg`)."""

    def __init__(self, message: str, hint: str | None = None, arg: str | None = None, code: str = "ARC0301"):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.arg = arg
        self.code = code


ShapeRule = Callable[[Any, list[TensorType]], TensorType]
CostRule = Callable[..., Cost]


@dataclass(frozen=True)
class OpDef:
    name: str
    params: type[Params]
    shape: ShapeRule
    cost: CostRule
    summary: str
    category: str
    kind: Kind = "layer"
    #: Required tensor inputs, by the names a caller may also pass them by keyword.
    inputs: tuple[str, ...] = ("x",)
    #: Optional tensor inputs (e.g. `kv` of cross-attention).
    optional_inputs: tuple[str, ...] = ()
    #: Parameters that take an op spec (e.g. `pos=rope(...)`), mapped to the allowed categories.
    components: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: A higher-order op wraps the block passed as `block=`.
    takes_block: bool = False
    #: Module name used for the node id (`attn` -> `layers.3.attn`).
    default_name: str = ""
    #: Which input positions must be token ids rather than hidden states.
    int_inputs: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.default_name:
            object.__setattr__(self, "default_name", self.name)


REGISTRY: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    assert op.name not in REGISTRY, f"op {op.name} registered twice"
    REGISTRY[op.name] = op
    return op


def get(name: str) -> OpDef:
    return REGISTRY[name]


def no_cost(p: Any, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """Ops that hold no weights and do no matmul work (elementwise, positions without tables)."""
    return Cost()


def same_shape(p: Any, ins: list[TensorType]) -> TensorType:
    return ins[0]


def linear(d_in: int, d_out: int, bias: bool) -> tuple[int, int]:
    """(parameters, forward FLOPs per token) of a dense layer: 2·d_in·d_out multiply-adds."""
    return d_in * d_out + (d_out if bias else 0), 2 * d_in * d_out


def width_of(ins: list[TensorType], i: int = 0, what: str = "input") -> int:
    """The feature width of hidden-state input `i`, or a shape error if it is not [B, T, d]."""
    t = ins[i]
    if t.dtype != "float" or len(t.shape) != 3:
        raise ShapeError(
            f"{what} must be hidden states float[batch, seq, d], got {t}",
            "token ids go through `embed(tokens, vocab, d)` first" if t.dtype == "int" else None,
            code="ARC0302",
        )
    return t.width


def seq_len(t: TensorType, ctx: CostCtx) -> int:
    from archc.ir.types import resolve

    return resolve(t.shape[1], ctx.env)


def divides(a: int, b: int, what_a: str, what_b: str, arg: str | None = None, hint: str | None = None) -> None:
    """Shape error unless a divides b (e.g. heads must divide the width)."""
    if a <= 0 or b % a != 0:
        raise ShapeError(f"{what_a} ({a}) does not divide {what_b} ({b})", hint, arg=arg, code="ARC0303")
