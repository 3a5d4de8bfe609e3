"""Structured pruning as an IR pass: the plan's new settings written into the nodes, then every
type recomputed (a narrower FFN narrows nothing outside it; a pruned width is the op's own).

The plan (the pass's options, a `PrunePlan`: node id -> the settings its prune rule's `PruneAxis.params` gave,
a nested op spec's as `{"params": {…}}`) comes from `archc prune`, which chooses the units with
the torch backend's scores. `archc prune` writes the same plan into the spec text as well (the
file the user keeps: `archc/dsl/edit.py`) and checks that the rewritten spec lowers to exactly
the graph this pass returns. Without a plan the pass returns the graph unchanged.
"""

from __future__ import annotations

from typing import Any

from archc.ir.graph import Graph, GraphError
from archc.passes.infer_shapes import retype
from archc.passes.manager import register_pass

#: node id -> the new settings of that node (its prune rule's `PruneAxis.params`).
PrunePlan = dict[str, dict[str, Any]]


def merged(params: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`params` with `changes` set; a nested op spec ({"op", "params"}) takes its changes inside."""
    out = dict(params)
    for k, v in changes.items():
        if isinstance(v, dict) and "params" in v and isinstance(out.get(k), dict):
            out[k] = {**out[k], "params": merged(out[k].get("params", {}), v["params"])}
        else:
            out[k] = v
    return out


@register_pass("prune", "apply a prune plan (its options: node -> new settings), then re-type", options=dict)
def prune(graph: Graph, plan: PrunePlan) -> Graph:
    if not plan:
        return graph
    g = graph.copy()
    for node_id, changes in plan.items():
        if node_id not in g.nodes:
            raise GraphError(f"the prune plan names `{node_id}`, which is not a node of {g.name}", node_id)
        n = g.nodes[node_id]
        g.nodes[node_id] = n.model_copy(update={"params": merged(n.params, changes)})
    return retype(g)
