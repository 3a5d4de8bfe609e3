"""Fusion as data: a `Rewrite` is a pattern over the IR, a check and a replacement.

archc knows what every node means, so a fusion needs no pattern matching on traced graphs (which
breaks whenever an exporter changes): it matches ops by name in the IR. A rewrite names

* `pattern`: a chain of ops, each node the only reader of the one before (`("swiglu",)`, or
  `("add", "rmsnorm")` for a residual add feeding a norm);
* `check(graph, nodes)`: why this match cannot be fused (a sentence), or None;
* `replace(graph, nodes)`: the node that computes what the match computed, an ordinary
  registered op (so `archc summary` counts it and both backends implement it).

`fuse(graph, rewrite)` applies a rewrite at every match in node order, bodies included, and
leaves its record in `node.meta` (torch.fx's convention): a fused node's `fused` says which
rewrite made it from which nodes, a node that matched but could not be fused keeps the reason in
`not_fused`. `fusion_report(graph)` reads them back for `archc passes`. A fusion pass is then a
registered pass whose body is `fuse(graph, A_REWRITE)`, one file per verb (`pack_gate_up.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from archc.ir.graph import Graph, Node

Check = Callable[[Graph, tuple[Node, ...]], str | None]


def always(graph: Graph, nodes: tuple[Node, ...]) -> str | None:
    return None


@dataclass(frozen=True)
class Rewrite:
    name: str
    pattern: tuple[str, ...]
    replace: Callable[[Graph, tuple[Node, ...]], Node]
    check: Check = always


def _matches(graph: Graph, rewrite: Rewrite) -> list[tuple[Node, ...]]:
    """Every chain of nodes with the pattern's ops, each the only reader of the one before (its
    value reaches nothing else, so the chain can become one node), in node order."""
    out = []
    for n in graph.nodes.values():
        if n.op != rewrite.pattern[0]:
            continue
        chain = [n]
        for op in rewrite.pattern[1:]:
            users = graph.users_of(chain[-1].id)
            if len(users) != 1 or graph.nodes[users[0]].op != op or chain[-1].id in graph.outputs:
                break
            chain.append(graph.nodes[users[0]])
        if len(chain) == len(rewrite.pattern):
            out.append(tuple(chain))
    return out


def fuse(graph: Graph, rewrite: Rewrite) -> Graph:
    """`graph` with `rewrite` applied at every match (nested bodies too); the input is untouched."""
    g = graph.copy()
    for nodes in _matches(g, rewrite):
        why = rewrite.check(g, nodes)
        if why is not None:
            first = g.nodes[nodes[0].id]
            g.nodes[first.id] = first.model_copy(update={"meta": {**first.meta, "not_fused": {
                **first.meta.get("not_fused", {}), rewrite.name: why}}})
            continue
        new = rewrite.replace(g, nodes)
        new = new.model_copy(update={"meta": {**new.meta, "fused": {"rewrite": rewrite.name,
                                                                    "from": [f"{n.id}: {n.op}" for n in nodes]}}})
        last = nodes[-1].id
        g.replace(last, new)
        for n in nodes[:-1]:
            g.erase(n.id)
    for n in list(g.nodes.values()):
        if n.body is not None:
            g.nodes[n.id] = n.model_copy(update={"body": fuse(n.body, rewrite)})
    return g


@dataclass(frozen=True)
class FusionLine:
    node: str
    op: str
    rewrite: str
    detail: str  # what it was made from, or why it was not


def fusion_report(graph: Graph) -> tuple[list[FusionLine], list[FusionLine]]:
    """(fused, not fused): every node a rewrite made and every match a check refused, bodies
    included, read from the nodes' `meta`."""
    fused, refused = [], []
    for n in graph.walk():
        if "fused" in n.meta:
            fused.append(FusionLine(n.id, n.op, n.meta["fused"]["rewrite"], " + ".join(n.meta["fused"]["from"])))
        for name, why in n.meta.get("not_fused", {}).items():
            refused.append(FusionLine(n.id, n.op, name, why))
    return fused, refused
