"""What the parts of the lowering share: the resource guards, the scope a node id is made in, the
input-node constructor and pydantic's error messages as diagnostics word them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from archc.errors import Span
from archc.ir.graph import Graph, Node
from archc.ir.types import TensorType

BUILTINS = ("repeat", "pattern")
MAX_INT = 2**63 - 1
MAX_STRING = 100_000
MAX_INCLUDE_DEPTH = 16


@dataclass(frozen=True)
class Limits:
    """Resource guards; a spec past them is refused with a diagnostic naming the limit."""

    max_nodes: int = 200_000
    max_params: int = 10**13
    max_layers: int = 100_000


class Abort(Exception):
    """A resource limit was hit: stop lowering at once (the diagnostic is already recorded)."""


@dataclass
class Scope:
    graph: Graph
    prefix: str  # node-id prefix, "" or "layers.3."
    blocks: tuple[str, ...]
    counters: dict[str, int] = field(default_factory=dict)


def input_node(name: str, t: TensorType, span: Span) -> Node:
    """A graph input of type `t` (the model's token ids, a body's hidden states)."""
    return Node(id=name, op="input", params={"dtype": t.dtype, "shape": t.shape}, type=t, span=span)


def pydantic_message(err: dict[str, Any]) -> str:
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], dict):
        msg += f" (got {err['input']!r})"
    return msg
