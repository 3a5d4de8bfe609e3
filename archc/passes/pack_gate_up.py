"""Pack a gated FFN's gate and up projections into one matmul (`swiglu` → `swiglu_packed`,
`geglu` → `geglu_packed`): one [2·hidden, d] weight read once instead of two [hidden, d] ones.

The packed op computes exactly what the original does; its declared weight `gate_up_proj.weight`
says it packs `gate_proj.weight` and `up_proj.weight`, so checkpoints keep the canonical layout
(the torch backend's load hooks, docs/passes.md).
"""

from __future__ import annotations

from archc.ir.graph import Graph, Node
from archc.passes.manager import NoOptions, register_pass
from archc.passes.rewrite import Rewrite, fuse


def _packed(graph: Graph, nodes: tuple[Node, ...]) -> Node:
    (n,) = nodes
    return n.model_copy(update={"op": f"{n.op}_packed"})


PACK_GATE_UP = tuple(Rewrite(f"pack_gate_up:{op}", (op,), _packed) for op in ("swiglu", "geglu"))


@register_pass("pack_gate_up", "gated FFNs' gate and up projections packed into one matmul (swiglu, geglu)")
def pack_gate_up(graph: Graph, options: NoOptions) -> Graph:
    for rewrite in PACK_GATE_UP:
        graph = fuse(graph, rewrite)
    return graph
