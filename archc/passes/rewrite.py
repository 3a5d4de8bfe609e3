"""Fusion as data: a `Rewrite` is a pattern over the IR, a check and a replacement.

archc knows what every node means, so a fusion needs no pattern matching on traced graphs (which
breaks whenever an exporter changes): it matches ops by name in the IR. A rewrite names

* `pattern`: a chain of ops, each node read by the next (`("swiglu",)`, or `("add", "rmsnorm")`
  for a residual add feeding a norm); a node of the chain is its next node's only reader unless
  its position is in `shared` (the residual sum also goes on down the stream);
* `check(graph, nodes)`: why this match cannot be fused (a sentence), or None;
* `replace(graph, nodes)`: what computes what the match computed: one node (it stands for the
  last of the chain), or a `Fused` — new nodes and which of them stands for each matched node
  still read elsewhere (a node with several outputs and its `item`s). Every new node is an
  ordinary registered op, so `archc summary` counts it and both backends implement it.

`fuse(graph, rewrite)` applies a rewrite at every match in node order, bodies included, and
leaves its record in `node.meta` (torch.fx's convention): a fused node's `fused` says which
rewrite made it from which nodes, a node that matched but could not be fused keeps the reason in
`not_fused`. `fusion_report(graph)` reads them back for `archc passes`. A fusion pass is then a
registered pass whose body is `fuse(graph, A_REWRITE)`, one file per verb (`pack_gate_up.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from archc.ir.graph import Graph, GraphError, Node

Check = Callable[[Graph, tuple[Node, ...]], str | None]


def always(graph: Graph, nodes: tuple[Node, ...]) -> str | None:
    return None


@dataclass(frozen=True)
class Fused:
    """A replacement of several nodes: `nodes` in order (they take the place of the chain's last
    node), and `values`: for each matched node read outside the match, the new node that stands
    for it from now on."""

    nodes: tuple[Node, ...]
    values: dict[str, str]


@dataclass(frozen=True)
class Rewrite:
    name: str
    pattern: tuple[str, ...]
    replace: Callable[[Graph, tuple[Node, ...]], Node | Fused]
    check: Check = always
    #: Positions in `pattern` whose value may be read outside the match as well.
    shared: frozenset[int] = frozenset()


def _matches(graph: Graph, rewrite: Rewrite) -> list[tuple[Node, ...]]:
    """Every chain of nodes with the pattern's ops, each read by the next (and by nothing else
    unless its position is `shared`), in node order."""
    out = []
    for n in graph.nodes.values():
        if n.op != rewrite.pattern[0]:
            continue
        chain = [n]
        for k, op in enumerate(rewrite.pattern[1:]):
            users = graph.users_of(chain[-1].id)
            nxt = [u for u in users if graph.nodes[u].op == op and graph.nodes[u].inputs[0] == chain[-1].id]
            if not nxt or (k not in rewrite.shared and (len(users) != 1 or chain[-1].id in graph.outputs)):
                break
            chain.append(graph.nodes[nxt[0]])
        if len(chain) == len(rewrite.pattern):
            out.append(tuple(chain))
    return out


def _read_early(graph: Graph, nodes: tuple[Node, ...]) -> str | None:
    """Why the match cannot become nodes at its last node's place: a value of it read before."""
    order = {k: i for i, k in enumerate(graph.nodes)}
    matched = {n.id for n in nodes}
    for n in nodes[:-1]:
        for u in graph.users_of(n.id):
            if u not in matched and order[u] < order[nodes[-1].id]:
                return f"`{n.id}` is also read by `{u}`, before `{nodes[-1].id}`"
    return None


def _splice(graph: Graph, nodes: tuple[Node, ...], fused: Fused) -> None:
    """Put `fused.nodes` where the match's last node stands, drop the match, and point every
    outside read of a matched node at the node that stands for it. The verifier checks the
    result after the pass (types, order)."""
    matched = {n.id for n in nodes}
    for n in nodes:
        outside = [u for u in graph.users_of(n.id) if u not in matched] + [o for o in graph.outputs if o == n.id]
        if outside and n.id not in fused.values:
            raise GraphError(f"fusion left `{n.id}` unread by its users {outside}", n.id)
    items: list[tuple[str, Node]] = []
    for k, n in graph.nodes.items():
        if k in matched:
            if k == nodes[-1].id:
                items.extend((m.id, m if m.span else m.model_copy(update={"span": n.span})) for m in fused.nodes)
            continue
        if any(i in fused.values for i in n.inputs):
            n = n.model_copy(update={"inputs": tuple(fused.values.get(i, i) for i in n.inputs)})
        items.append((k, n))
    ids = [k for k, _ in items]
    if len(set(ids)) != len(ids):
        raise GraphError("fusion made a node id that is already defined", nodes[-1].id)
    graph.nodes = dict(items)
    graph.outputs = [fused.values.get(o, o) for o in graph.outputs]


def fuse(graph: Graph, rewrite: Rewrite) -> Graph:
    """`graph` with `rewrite` applied at every match (nested bodies too); the input is untouched."""
    g = graph.copy()
    for found in _matches(g, rewrite):
        if any(n.id not in g.nodes for n in found):  # an earlier fusion of this pass took it
            continue
        nodes = tuple(g.nodes[n.id] for n in found)  # as earlier fusions rewired them
        why = _read_early(g, nodes) or rewrite.check(g, nodes)
        if why is not None:
            first = g.nodes[nodes[0].id]
            g.nodes[first.id] = first.model_copy(update={"meta": {**first.meta, "not_fused": {
                **first.meta.get("not_fused", {}), rewrite.name: why}}})
            continue
        new = rewrite.replace(g, nodes)
        fused = new if isinstance(new, Fused) else Fused((new,), {nodes[-1].id: new.id})
        record = {"rewrite": rewrite.name, "from": [f"{n.id}: {n.op}" for n in nodes]}
        made = tuple(m if m.op == "item" else m.model_copy(update={"meta": {**m.meta, "fused": record}})
                     for m in fused.nodes)
        _splice(g, nodes, Fused(made, fused.values))
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
