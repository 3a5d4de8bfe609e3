"""Dead-code elimination: nodes whose value reaches no output are erased (JAX's `dce_jaxpr`).

Lowering warns about such values (ARC0501) and keeps them, so a spec builds as written; this pass
is what drops them, in bodies too. It changes the parameter count of a spec that has dead values,
which is why it runs in the `clean` pipeline and not in the ones `build` and `export` run: a
checkpoint of the spec as written must load into the built model.
Graph inputs stay, used or not: they are the model's calling convention.
"""

from __future__ import annotations

from archc.ir.graph import Graph
from archc.passes.manager import NoOptions, register_pass


def _live(graph: Graph) -> set[str]:
    live = set(graph.outputs) | set(graph.inputs)
    for n in reversed(list(graph.nodes.values())):
        if n.id in live:
            live.update(n.inputs)
    return live


def _dce(graph: Graph) -> Graph:
    g = graph.copy()
    live = _live(g)
    for node_id in reversed(list(g.nodes)):
        if node_id not in live:
            g.erase(node_id)
    for n in list(g.nodes.values()):
        if n.body is not None:
            g.nodes[n.id] = n.model_copy(update={"body": _dce(n.body)})
    return g


@register_pass("eliminate_dead_code", "erase nodes whose value reaches no output (bodies included)")
def eliminate_dead_code(graph: Graph, options: NoOptions) -> Graph:
    return _dce(graph)
