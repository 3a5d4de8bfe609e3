"""Shape inference: every node's type recomputed from its inputs' types by its op's shape rule.

Lowering types each node as it creates it with `node_type` (the same rule), so a freshly lowered
graph is already typed; this pass is what re-types a graph after a rewrite changed a width (a
pruned FFN, fused projections). Bodies of higher-order ops are re-typed from the op's input, so a
narrower model narrows its wrapped blocks too.

    >>> from archc.passes.manager import run
    >>> typed = run(graph, ["infer_shapes"]).graph
"""

from __future__ import annotations

from typing import Any

from archc.ir.graph import Graph
from archc.ir.types import TensorType
from archc.ops.registry import REGISTRY, OpDef, ShapeError
from archc.passes.manager import NoOptions, register_pass


def node_type(op: OpDef, params: Any, in_types: list[TensorType]) -> TensorType:
    """The output type of `op` with validated `params` on inputs of `in_types` (raises
    `ShapeError` with the argument to blame)."""
    return op.shape(params, in_types)


def retype(graph: Graph, input_types: list[TensorType] | None = None) -> Graph:
    """A copy of `graph` with every type recomputed; `input_types` overrides the inputs' types
    (a body takes its op's input type)."""
    g = graph.copy()
    if input_types is not None:
        for name, t in zip(g.inputs, input_types, strict=True):
            g.nodes[name] = g.nodes[name].model_copy(
                update={"type": t, "params": {**g.nodes[name].params, "dtype": t.dtype, "shape": t.shape}})
    for n in list(g.nodes.values()):
        op = REGISTRY[n.op]
        ins = g.input_types(n)
        try:
            t = node_type(op, op.params(**n.params), ins)
        except ShapeError as e:
            e.node = n.id  # type: ignore[attr-defined]
            raise
        update: dict[str, Any] = {"type": t}
        if n.body is not None:
            body = retype(n.body, ins[:1])
            out = body.nodes[body.outputs[0]].type
            if out != ins[0]:
                err = ShapeError(f"the block wrapped by `{n.op}` maps {ins[0]} to {out}, not to the same type")
                err.node = n.id  # type: ignore[attr-defined]
                raise err
            update["body"] = body
        g.nodes[n.id] = n.model_copy(update=update)
    return g


@register_pass("infer_shapes", "re-type every node from its inputs by its op's shape rule")
def infer_shapes(graph: Graph, options: NoOptions) -> Graph:
    return retype(graph)
