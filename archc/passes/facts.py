"""Facts of a whole graph, derived from its nodes' op records: its declared state and weights,
whether it is causal, the loss its head implies, the class of each of its weights.

These read the records (`archc.ops.registry`) but are not part of any one record, so they live
here, beside the passes that use them, rather than in the registry.
"""

from __future__ import annotations

from dataclasses import replace

from archc.ir.cost import StateTensor
from archc.ir.graph import Graph, Node
from archc.ir.sharding import Parallel
from archc.ir.weights import Weight
from archc.ops.registry import REGISTRY, Loss, Role


def prefixed(prefix: str, state: tuple[StateTensor, ...]) -> tuple[StateTensor, ...]:
    return tuple(s.renamed(f"{prefix}.{s.name}") for s in state)


def node_state(graph: Graph, node: Node) -> tuple[StateTensor, ...]:
    """The declared state of one node, its body's included (names relative to the node)."""
    op = REGISTRY[node.op]
    p = op.params(**node.params)
    own = op.state(p, graph.input_types(node))
    if node.body is None:
        return own
    inner = graph_state(node.body)
    return own + (op.body_state(p, inner) if op.body_state is not None else prefixed("body", inner))


def graph_state(graph: Graph) -> tuple[StateTensor, ...]:
    """The declared state of a graph in node order, named `<node id>.<state>` (the names the torch
    backend's `state_names` and the ONNX backend's state inputs use)."""
    out: list[StateTensor] = []
    for n in graph.nodes.values():
        out.extend(prefixed(n.id, node_state(graph, n)))
    return tuple(out)


def node_weights(graph: Graph, node: Node) -> tuple[Weight, ...]:
    """The weights node `node` itself declares (names relative to the node; a body's weights
    are its body nodes')."""
    op = REGISTRY[node.op]
    return op.weights(op.params(**node.params), graph.input_types(node))


def graph_weights(graph: Graph) -> dict[str, Weight]:
    """Every declared weight of a graph, bodies included, by its state_dict key
    (`layers.3.attn.q_proj.weight`, `rmt.body.layers.0.attn.q_proj.weight`)."""
    out: dict[str, Weight] = {}
    for n in graph.nodes.values():
        for w in node_weights(graph, n):
            out[f"{n.id}.{w.name}"] = w
        if n.body is not None:
            out.update({f"{n.id}.body.{k}": w for k, w in graph_weights(n.body).items()})
    return out


def is_causal(graph: Graph) -> bool:
    """True when no node lets a position see the future: labels are then shifted (next-token
    prediction) and the model decodes incrementally. Ops say so in their `causal` rule."""
    for n in graph.nodes.values():
        op = REGISTRY[n.op]
        if op.causal(op.params(**n.params), graph.input_types(n)) is False:
            return False
        if n.body is not None and not is_causal(n.body):
            return False
    return True


def head_loss(graph: Graph) -> Loss | None:
    """The loss implied by the op producing the graph's (first) output, None if it implies none."""
    n = graph.nodes[graph.outputs[0]]
    op = REGISTRY[n.op]
    return op.loss(op.params(**n.params))


def weight_class(graph: Graph, key: str) -> str | None:
    """The declared class of the model weight `key` (a state_dict key,
    `layers.3.mixer.in_proj.weight`), or None when no node declares it. (For many keys, read
    `graph_weights` once.)"""
    w = graph_weights(graph).get(key)
    return None if w is None else w.cls


def count_role(graph: Graph, role: Role) -> int:
    """How many nodes (bodies included) have `role` (e.g. the mixers of GPT-2's scaled init)."""
    return sum(1 for n in graph.walk() if REGISTRY[n.op].role == role)


def node_parallel(graph: Graph, node: Node) -> Parallel:
    """The parallelism rule of a node (`OpDef.parallel`). An op without a rule that mixes no
    positions (a norm, an activation, a classifier) runs on a split sequence as it is."""
    op = REGISTRY[node.op]
    p, ins = op.params(**node.params), graph.input_types(node)
    rule = op.parallel(p, ins)
    if rule.context == "none" and not rule.why_context:
        if op.causal(p, ins) is None and node.body is None:
            return replace(rule, context="pointwise")
        return replace(rule, why_context="it mixes positions and has no context-parallel form")
    return rule
