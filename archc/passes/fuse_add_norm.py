"""Fuse a residual add into the norm that reads it (`add` → `rmsnorm` becomes `add_rmsnorm`,
`add` → `layernorm` becomes `add_layernorm`): onnxruntime's `SkipSimplifiedLayerNormalization` /
`SkipLayerNormalization`, one pass over the activations instead of two.

The fused node has two outputs, the normed value and the sum (a pre-norm block's residual stream
goes on from the sum), read through `item` nodes `<norm id>.norm` and `<norm id>.sum`. The fused
node keeps the norm's id, so its weight keeps its name (`layers.3.norm_1.weight`): checkpoints
need no mapping.
"""

from __future__ import annotations

from archc.ir.graph import Graph, Node
from archc.ir.types import TupleType
from archc.ops.registry import REGISTRY
from archc.passes.manager import NoOptions, register_pass
from archc.passes.rewrite import Fused, Rewrite, fuse


def _fused(graph: Graph, nodes: tuple[Node, ...]) -> Fused:
    add, norm = nodes
    op = f"add_{norm.op}"
    node = norm.model_copy(update={"op": op, "inputs": add.inputs, "type": TupleType(items=(norm.type, add.type)),
                                   "meta": {}})
    made, values = [node], {}
    for index, (old, name) in enumerate(zip((norm, add), REGISTRY[op].outputs, strict=True)):
        if graph.users_of(old.id) == [norm.id] and old.id not in graph.outputs:
            continue  # the add's sum is read only by the norm (a final norm): no item for it
        item = Node(id=f"{norm.id}.{name}", op="item", inputs=(norm.id,), params={"index": index},
                    type=old.type, span=old.span, blocks=old.blocks)
        made.append(item)
        values[old.id] = item.id
    return Fused(tuple(made), values)


FUSE_ADD_NORM = tuple(Rewrite(f"fuse_add_norm:{norm}", ("add", norm), _fused, shared=frozenset({0}))
                      for norm in ("rmsnorm", "layernorm"))


@register_pass("fuse_add_norm", "a residual add and the norm that reads it in one op with two outputs "
                                "(add_rmsnorm, add_layernorm)")
def fuse_add_norm(graph: Graph, options: NoOptions) -> Graph:
    for rewrite in FUSE_ADD_NORM:
        graph = fuse(graph, rewrite)
    return graph
