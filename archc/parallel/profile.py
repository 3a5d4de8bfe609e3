"""What one rank of a tensor/expert/context-parallel group holds and does, layer by layer: the
cost model's per-node figures (`estimate_cost`) cut by each op's parallelism rule.

A `Unit` is a pipeline unit — a layer of the cost table (`layers.3`, `embed`, `lm_head`): stages
are cut between units. `Unit.at(tp, ep)` gives a `Share`: parameters, forward FLOPs and training
activations per token a rank holds, the elements a token sends through each collective, and the
ops that stayed whole. Sequence parallelism is assumed with tensor parallelism (Korthikanti et
al. 2022): ops that mix no positions run on 1/tp of the tokens, so their activations split too,
and each all-reduce becomes a reduce-scatter plus an all-gather of the same volume.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from archc.ir.cost import MAX_LEN, Cost, CostCtx
from archc.ir.graph import Graph, Node
from archc.ir.sharding import CannotShard, Parallel, Sharding
from archc.ir.weights import Weight
from archc.ops.registry import REGISTRY
from archc.passes.estimate_cost import layer_of, node_cost
from archc.passes.facts import node_parallel, node_state, node_weights


@dataclass(frozen=True)
class NodeInfo:
    """One node's costs and rule, read once."""

    id: str
    op: str
    cost: Cost
    weights: tuple[Weight, ...]
    rule: Parallel
    width: int  # the output's feature width (what a `sum` output all-reduces per token)
    in_bytes: float  # the input's bytes per token (kept for backward, replicated across tp)
    state_per_seq: int  # declared state elements per sequence at the costed length (context passing)
    kv_per_token: int  # elements per token of the key/value caches (what ring attention circulates)
    top_k: int  # MoE: experts a token visits
    act: float  # training activation bytes per token: the cost model's (fused kernels) or a measured profile's
    act_tp: Mapping[int, float]  # a rank's, measured under tensor parallelism of each degree (eager profile)


@dataclass
class Share:
    """What one rank holds and does for a unit at some (tp, ep)."""

    params: float = 0.0  # parameters held
    expert_params: float = 0.0  # of which experts' (their gradients reduce over the expert-data group)
    flops: float = 0.0  # forward FLOPs per token of the sequence the rank computes for
    act: float = 0.0  # training activation bytes per token
    tp_elems: float = 0.0  # elements per token through tensor-parallel collectives, forward
    ep_elems: float = 0.0  # elements per token through all-to-all, forward
    ring_elems: float = 0.0  # key/value elements per token circulated by ring attention
    state_elems: float = 0.0  # state elements per sequence handed on under context parallelism
    mixes: int = 0  # ops that hand on a state (sequential hops under context parallelism)
    replicated: list[str] = field(default_factory=list)  # "node: why"
    context_refused: list[str] = field(default_factory=list)  # "node: why"


@dataclass
class Unit:
    name: str
    nodes: list[NodeInfo]
    width: int
    _memo: dict[tuple[int, int], Share] = field(default_factory=dict, repr=False)

    def at(self, tp: int, ep: int) -> Share:
        """What a rank holds and does for this unit under tensor degree `tp` and expert degree `ep`."""
        if (tp, ep) not in self._memo:
            self._memo[tp, ep] = _share(self, tp, ep)
        return self._memo[tp, ep]


def _sharding(rule: Parallel, tp: int) -> Sharding | str:
    if rule.tensor is None:
        return rule.why_replicated
    try:
        return rule.tensor(tp)
    except CannotShard as e:
        return str(e)


def _share(unit: Unit, tp: int, ep: int) -> Share:
    s = Share()
    for n in unit.nodes:
        pointwise = n.rule.context == "pointwise"
        params = sum(w.numel for w in n.weights if not w.buffer)
        expert_w = [w for w in n.weights if w.cls == "expert" and not w.buffer]
        flops, act = n.cost.flops, n.act
        sharding = _sharding(n.rule, tp) if tp > 1 else None
        measured = n.act_tp.get(tp) if tp > 1 else None  # the eager profile of this rank's share
        if measured is not None:
            s.act += measured
        if tp > 1 and isinstance(sharding, Sharding):
            held = sum(sharding.local_numel(w.name, w.shape) for w in n.weights if not w.buffer)
            s.flops += flops / tp
            if measured is None:  # sequence parallelism as Korthikanti et al.: the input kept as the rank's chunk
                s.act += n.in_bytes / tp + max(0.0, act - n.in_bytes) / tp
            if sharding.output == "sum":
                s.tp_elems += n.width
            s.tp_elems += sum(r.elements for r in sharding.reductions)
        else:
            held = params
            if tp > 1 and not pointwise and params:
                s.replicated.append(f"{n.id} ({n.op}): {sharding}")
            split = tp if pointwise else 1  # sequence-parallel
            s.flops += flops / split
            s.act += act / split if measured is None else 0.0
        if expert_w:
            local_expert = sum((sharding.local_numel(w.name, w.shape) if isinstance(sharding, Sharding) else w.numel)
                               for w in expert_w)
            if ep > 1:
                held -= local_expert * (1 - 1 / ep)
                local_expert /= ep
            s.expert_params += local_expert
            s.ep_elems += 2 * n.top_k * n.width if ep > 1 else 0
        s.params += held
        share = 1 / tp if isinstance(sharding, Sharding) else 1
        if n.rule.context == "ring":
            s.ring_elems += n.kv_per_token * max(share, 1 / max(1, tp))
        elif n.rule.context == "state":
            s.state_elems += n.state_per_seq * share
            s.mixes += 1
        elif n.rule.context == "none":
            s.context_refused.append(f"{n.id} ({n.op}): {n.rule.why_context}")
    return s


def _info(graph: Graph, node: Node, ctx: CostCtx, activations: Mapping[int, Mapping[str, float]] | None) -> NodeInfo:
    op = REGISTRY[node.op]
    ins = graph.input_types(node)
    width = node.type.width if hasattr(node.type, "width") and node.type.dtype == "float" else 0
    in_width = ins[0].width if ins and ins[0].dtype == "float" and len(ins[0].shape) == 3 else 0
    state = node_state(graph, node)
    kv = sum(s.numel(1) for s in state if MAX_LEN in s.shape)
    p = op.params(**node.params)
    cost = node_cost(graph, node, ctx)
    act = cost.act_bytes if activations is None else activations[1].get(node.id, 0.0)
    act_tp = {tp: a.get(node.id, 0.0) for tp, a in (activations or {}).items() if tp > 1}
    return NodeInfo(node.id, node.op, cost, node_weights(graph, node), node_parallel(graph, node),
                    width, in_width * ctx.dtype_bytes, sum(s.numel(ctx.seq) for s in state), kv,
                    getattr(p, "top_k", 0), act, act_tp)


def units(graph: Graph, ctx: CostCtx, activations: Mapping[int, Mapping[str, float]] | None = None) -> list[Unit]:
    """The graph's pipeline units in order, each with its nodes' costs and rules. Body nodes of
    higher-order ops are inside their wrapper's cost (the wrapper is replicated). Activations per
    token are the cost model's (what fused kernels keep) unless `activations` gives each node's
    for a rank at some tensor-parallel degrees (the eager modules' measured profiles,
    `archc.backends.torch.activation_profile.activation_profiles`; tp = 1 required, other degrees
    scaled from it by the rule)."""
    out: dict[str, Unit] = {}
    for n in graph.nodes.values():
        kind = REGISTRY[n.op].kind
        if kind in ("input", "component"):
            continue
        info = _info(graph, n, ctx, activations)
        u = out.setdefault(layer_of(n.id), Unit(layer_of(n.id), [], 0))
        u.nodes.append(info)
        u.width = max(u.width, info.width)
    return list(out.values())
