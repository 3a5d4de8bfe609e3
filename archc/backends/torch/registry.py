"""The torch backend's entries in the lowering table (`archc.backends.lowering`), and what a
module constructor is given.

Torch modules live in `archc/backends/torch/ops/<family>.py`, mirroring the op's
`archc/ops/<family>.py` record (not inside it: importing torch from the op records would make
`archc check` cost a full `import torch`, docs/architecture.md). Each family file decorates its
module classes with `@implements("op", ...)`, i.e. `register_lowering("torch", "op", ...)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from archc.backends.lowering import lowerings, register_lowering
from archc.ir.graph import Graph, Node
from archc.ir.types import TensorType


def implements(*ops: str) -> Callable[[type], type]:
    """`@implements("attention")`: register a module class as the torch lowering of the ops. The
    class learns its op (`cls.op`); a class serving several ops (`swiglu`, `geglu`) is registered
    as one subclass per op, named like it, so each module knows its op when it is built."""

    def deco(cls: type) -> type:
        for op in ops:
            impl = cls if len(ops) == 1 else type(cls.__name__, (cls,), {"op": op, "__module__": cls.__module__,
                                                                         "__qualname__": cls.__qualname__,
                                                                         "__doc__": cls.__doc__})
            impl.op = op
            register_lowering("torch", op)(impl)
        return cls

    return deco


def modules() -> dict[str, Any]:
    """The torch lowering of every op the backend implements: a module class (`implements`) for
    the layer ops, a function of the input tensors for the arithmetic (`ops/arith.py`)."""
    return lowerings("torch")


@dataclass
class BuildCtx:
    """What a module constructor gets besides its parameters: the node, the graph it is in, a way
    to build component ops (the expert of `moe`) from their specs and input types, and a way to
    build a body graph's interpreter (the block of `act`, `mod`, `recurrent_memory`) — passed in,
    so that op modules never import the interpreter that imports them."""

    node: Node
    graph: Graph
    build_op: Callable[[str, dict[str, Any], list[TensorType]], Any]
    build_graph: Callable[[Graph], Any]
