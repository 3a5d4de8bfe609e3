"""Which torch module implements which op.

Torch modules live in `archc/backends/torch/ops/<family>.py`, beside (not inside) the op's
`archc/ops/<family>.py` record: importing torch from the op records would make `archc check`
cost a full `import torch` (docs/architecture.md). Each family file decorates its module classes
with `@implements("op", ...)`; `modules()` imports all family files once.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from archc.ir.graph import Graph, Node
from archc.ir.types import TensorType

FAMILIES = ("embeddings", "norms", "ffn", "attention", "sparse_attention", "linear_attention", "conv", "heads",
            "moe", "routing", "memory", "ssm", "retention", "rwkv", "recurrent",
            "xlstm")

_MODULES: dict[str, type] = {}
_loaded = False


def implements(*ops: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        for op in ops:
            assert op not in _MODULES, f"torch module for {op} registered twice"
            _MODULES[op] = cls
        return cls

    return deco


def modules() -> dict[str, type]:
    global _loaded
    if not _loaded:
        for fam in FAMILIES:
            importlib.import_module(f"archc.backends.torch.ops.{fam}")
        _loaded = True
    return _MODULES


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
