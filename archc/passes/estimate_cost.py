"""Cost analysis as a pass: every node annotated with its `Cost` (`node.meta["cost"]`), and the
`CostReport` of `archc summary` (per node, per layer, in total) read back from the annotations.

A node's cost is its op's cost rule (FLOPs, activations), its declared weights (the op record's
`weights`: the parameters the backends allocate) and its declared state (the op record's `state`,
bound to the costed context length), so what `archc summary` reports is what the backends hold.
Higher-order ops receive the summed cost of their body (its state left out: the op's declared
state says how the body's state is kept).

    >>> from archc.passes.manager import run
    >>> g = run(graph, "summary", {"estimate_cost": CostCtx(seq=4096)}).graph
    >>> g.nodes["layers.0.attn"].meta["cost"].params
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from archc.ir.cost import Cost, CostCtx
from archc.ir.graph import Graph, Node
from archc.ir.weights import parameter_count
from archc.ops.registry import REGISTRY
from archc.passes.facts import node_state, node_weights, prefixed
from archc.passes.manager import register_pass, run

#: Tokens per parameter for compute-optimal training (Hoffmann et al., 2022, "Chinchilla").
CHINCHILLA_TOKENS_PER_PARAM = 20

_LAYER = re.compile(r"^(.*?\.\d+)\.")


def node_cost(graph: Graph, node: Node, ctx: CostCtx, with_state: bool = True) -> Cost:
    """The cost of one node: its op's rule (bodies summed in), its declared weights and state."""
    op = REGISTRY[node.op]
    p = op.params(**node.params)
    ins = graph.input_types(node)
    if op.takes_block:
        assert node.body is not None
        body = total_cost(node.body, ctx, with_state=False)
        c = op.cost(p, ins, node.type, ctx, body=body)
    else:
        c = op.cost(p, ins, node.type, ctx)
    c = replace(c, params=c.params + parameter_count(node_weights(graph, node)))
    if not with_state:
        return c
    state = tuple(s.bound(ctx.seq) for s in prefixed(node.id, node_state(graph, node)))
    nbytes = sum(s.nbytes(ctx.seq, ctx.dtype_bytes) for s in state)
    return Cost(c.params, c.flops, c.act_bytes, nbytes, state)


def total_cost(graph: Graph, ctx: CostCtx, with_state: bool = True) -> Cost:
    total = Cost()
    for n in graph.nodes.values():
        total = total + node_cost(graph, n, ctx, with_state)
    return total


def layer_of(node_id: str) -> str:
    """The row a node is reported in: `layers.3` for `layers.3.attn`, else its first segment."""
    m = _LAYER.match(node_id)
    if m:
        return m.group(1)
    return node_id.split(".")[0]


@register_pass("estimate_cost", "annotate every node with its cost (meta['cost']) at its options' seq/batch/dtype",
               options=CostCtx)
def annotate_cost(graph: Graph, ctx: CostCtx) -> Graph:
    g = graph.copy()
    for n in g.nodes.values():
        n.meta["cost"] = node_cost(g, n, ctx)
    return g


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
        "state": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in cost.state],
    }


def report(graph: Graph, ctx: CostCtx) -> CostReport:
    """The per-layer report of a graph the `estimate_cost` pass annotated."""
    out = CostReport(ctx)
    for n in graph.nodes.values():
        if REGISTRY[n.op].kind == "input":
            continue
        key = layer_of(n.id)
        c: Cost = n.meta["cost"]
        out.layers[key] = out.layers.get(key, Cost()) + c
        out.ops.setdefault(key, [])
        if n.op not in out.ops[key] and REGISTRY[n.op].kind != "arith":
            out.ops[key].append(n.op)
        out.total = out.total + c
    return out


def estimate_cost(graph: Graph, ctx: CostCtx) -> CostReport:
    """Annotate a typed graph (a lowered one, or one a pipeline re-typed) with its costs and report
    them (what `archc summary` prints). It runs the cost pass alone: re-typing a graph lowering
    has just typed would only cost `archc summary` time (the `summary` pipeline does both)."""
    return report(run(graph, ["estimate_cost"], {"estimate_cost": ctx}, verify_each=False).graph, ctx)
