"""Cost analysis: parameters, FLOPs, activation and state memory, per node, per layer and in total.

`estimate_cost(graph, ctx)` is an analysis pass: it reads the graph and returns a `CostReport`
(it does not change the graph). Each node's cost comes from its op's cost rule in the registry;
higher-order ops receive the summed cost of their body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from archc.ir.cost import Cost, CostCtx
from archc.ir.graph import Graph, Node
from archc.ops.registry import REGISTRY

#: Tokens per parameter for compute-optimal training (Hoffmann et al., 2022, "Chinchilla").
CHINCHILLA_TOKENS_PER_PARAM = 20

_LAYER = re.compile(r"^(.*?\.\d+)\.")


def node_cost(graph: Graph, node: Node, ctx: CostCtx) -> Cost:
    if node.op == "input":
        return Cost()
    op = REGISTRY[node.op]
    p = op.params(**node.params)
    ins = [graph.nodes[i].type for i in node.inputs]
    if op.takes_block:
        assert node.body is not None
        return op.cost(p, ins, node.type, ctx, body=total_cost(node.body, ctx))
    return op.cost(p, ins, node.type, ctx)


def total_cost(graph: Graph, ctx: CostCtx) -> Cost:
    total = Cost()
    for n in graph.nodes.values():
        total = total + node_cost(graph, n, ctx)
    return total


def layer_of(node_id: str) -> str:
    """The row a node is reported in: `layers.3` for `layers.3.attn`, else its first segment."""
    m = _LAYER.match(node_id)
    if m:
        return m.group(1)
    return node_id.split(".")[0]


@dataclass
class CostReport:
    ctx: CostCtx
    layers: dict[str, Cost] = field(default_factory=dict)
    ops: dict[str, list[str]] = field(default_factory=dict)
    total: Cost = field(default_factory=Cost)

    @property
    def chinchilla_tokens(self) -> int:
        return CHINCHILLA_TOKENS_PER_PARAM * self.total.params

    @property
    def training_flops(self) -> float:
        """≈ 6·N·D for the compute-optimal D (forward 2N, backward 4N per token; Kaplan et al.)."""
        return 3 * self.total.flops * self.chinchilla_tokens

    def to_json(self, graph: Graph) -> dict:
        c = self.ctx
        return {
            "model": graph.name,
            "seq": c.seq, "batch": c.batch, "dtype": c.dtype,
            "total": _cost_json(self.total, c),
            "chinchilla_tokens": self.chinchilla_tokens,
            "training_flops_chinchilla": self.training_flops,
            "layers": [{"name": k, "ops": self.ops[k], **_cost_json(v, c)} for k, v in self.layers.items()],
        }


def _cost_json(cost: Cost, c: CostCtx) -> dict:
    return {
        "params": cost.params,
        "flops_per_token": cost.flops,
        "activation_bytes": cost.act_bytes * c.seq * c.batch,
        "state_bytes": cost.state_bytes * c.batch,
        "state": [{"name": s.name, "shape": list(s.shape)} for s in cost.state],
    }


def estimate_cost(graph: Graph, ctx: CostCtx) -> CostReport:
    report = CostReport(ctx)
    for n in graph.nodes.values():
        if n.op == "input":
            continue
        key = layer_of(n.id)
        c = node_cost(graph, n, ctx)
        report.layers[key] = report.layers.get(key, Cost()) + c
        report.ops.setdefault(key, [])
        if n.op not in report.ops[key] and n.op not in ("add", "mul"):
            report.ops[key].append(n.op)
        report.total = report.total + c
    return report
