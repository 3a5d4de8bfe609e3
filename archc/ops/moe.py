"""Mixture of experts: top-k softmax routing (Mixtral), Switch top-1 with a capacity factor and token
dropping (Fedus et al.), shared experts (DeepSeekMoE), with load-balancing and router-z losses."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from archc.ir.cost import Cost, CostCtx
from archc.ir.sharding import CannotShard, Parallel, Sharding, split_units
from archc.ir.types import TensorType
from archc.ir.weights import Weight, dense, under
from archc.ops.registry import REGISTRY, OpDef, Params, PruneAxis, ShapeError, register, width_of


class MoEParams(Params):
    experts: PositiveInt = Field(description="routed experts E")
    top_k: PositiveInt = Field(2, description="experts per token (1 = Switch)")
    expert: dict[str, Any] = Field(description="the expert network, e.g. swiglu(hidden=14336)")
    shared_experts: int = Field(0, ge=0, description="experts every token goes through (DeepSeekMoE)")
    capacity_factor: PositiveFloat | None = Field(
        None, description="tokens per expert = factor·k·T/E; overflow tokens are dropped (Switch)")
    router_bias: bool = False
    aux_loss: float = Field(0.01, ge=0, description="weight of the load-balancing loss (Switch eq. 4)")
    z_loss: float = Field(0.0, ge=0, description="weight of the router z-loss (ST-MoE)")
    jitter: float = Field(0.0, ge=0, description="multiplicative router-input noise in training")
    renormalize: bool = Field(True, description="with top_k > 1, rescale the chosen probabilities to sum to one "
                                                "(Mixtral); false keeps the softmax's (Qwen2-MoE, Jamba)")

    @model_validator(mode="after")
    def _k_le_e(self) -> MoEParams:
        if self.top_k > self.experts:
            raise ValueError(f"top_k ({self.top_k}) exceeds the number of experts ({self.experts})")
        return self


def _expert_cost(spec: dict[str, Any], ins: list[TensorType], ctx: CostCtx) -> Cost:
    op = REGISTRY[spec["op"]]
    p = op.params(**spec["params"])
    return op.cost(p, ins, op.shape(p, ins), ctx)


def _shape(p: MoEParams, ins: list[TensorType]) -> TensorType:
    width_of(ins)
    op = REGISTRY[p.expert["op"]]
    out = op.shape(op.params(**p.expert["params"]), ins)
    if out != ins[0]:
        raise ShapeError(f"the expert maps {ins[0]} to {out}; experts must keep the width", arg="expert")
    return ins[0]


def _cost(p: MoEParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """FLOPs per token: router 2·d·E + (top_k + S) experts' forward. Activations: top_k + S
    experts' worth."""
    d = width_of(ins)
    e = _expert_cost(p.expert, ins, ctx)
    active = p.top_k + p.shared_experts
    return Cost(flops=2 * d * p.experts + active * e.flops, act_bytes=active * e.act_bytes + p.experts * 4)


def _weights(p: MoEParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """The router d→E (bias with `router_bias`; a removed expert takes its row), then each of the
    E routed experts `experts.e` and S shared experts `shared.s` as the expert op declares its
    weights, in class `expert`; routed experts' hidden units are cut as the expert's rule says."""
    inner = REGISTRY[p.expert["op"]]
    expert = inner.weights(inner.params(**p.expert["params"]), ins)
    routed = tuple(replace(w, cls="expert") for w in expert)
    shared = tuple(replace(w, cls="expert", cuts=()) for w in expert)
    return (dense("router", width_of(ins), p.experts, "router", p.router_bias, cuts_out=("experts",))
            + tuple(w for e in range(p.experts) for w in under(f"experts.{e}", routed))
            + tuple(w for s in range(p.shared_experts) for w in under(f"shared.{s}", shared)))


def _moe_prune(p: MoEParams, ins: list[TensorType]) -> tuple[PruneAxis, ...]:
    """Experts: expert e's router row and its whole `experts.e` (later experts renumbered). Zeroing
    weights cannot take an expert out of the top-k, so the masked model is defined on the router:
    the removed experts' logits are −∞. And the experts' hidden units (`ffn`): each expert is a
    group keeping the same count (one `expert=` spec), its units those of the expert's own rule."""
    inner = REGISTRY[p.expert["op"]]
    axes = [a for a in inner.prune(inner.params(**p.expert["params"]), ins) if a.kind == "ffn"]
    out = [PruneAxis("experts", p.experts,
                     lambda e: {"router.weight": (0, [e]), **({"router.bias": (0, [e])} if p.router_bias else {})},
                     lambda kept: {"experts": len(kept), "top_k": min(p.top_k, len(kept))},
                     lambda e: ("router", None), modules=lambda e: [f"experts.{e}"],
                     note="masked on the router: removed experts' logits are −∞")]
    if axes:
        a, per = axes[0], axes[0].units

        def slices(u: int) -> dict:
            e, j = divmod(u, per)
            return {f"experts.{e}.{k}": v for k, v in a.slices(j).items()}

        def activation(u: int) -> tuple[str, list[int] | None]:
            e, j = divmod(u, per)
            mod, ch = a.activation(j)
            return f"experts.{e}.{mod}", ch

        def params(kept: list[int]) -> dict:
            spec = dict(p.expert)
            spec["params"] = {**p.expert["params"], **a.params(list(range(len(kept) // p.experts)))}
            return {"expert": spec}

        out.append(PruneAxis("ffn", p.experts * per, slices, params, activation, groups=p.experts))
    return tuple(out)


def _moe_parallel(p: MoEParams, ins: list[TensorType]) -> Parallel:
    """Tensor: every expert (routed and shared) split by its hidden units as a dense FFN is
    (`ffn_sharding`; the router replicated, so routing stays global), output summed. Expert: the
    routed experts owned whole by E/degree ranks each, tokens sent to their experts' ranks and back
    (all-to-all), shared experts and the router replicated. Tokens are routed one by one: a split
    sequence needs nothing."""
    from archc.ops.ffn import ffn_sharding

    ws = _weights(p, ins)
    hidden = p.expert["params"].get("hidden")
    experts = p.experts

    def tensor(t: int) -> Sharding:
        if hidden is None:
            raise CannotShard(f"`{p.expert['op']}` experts have no hidden units to split")
        return ffn_sharding(ws, hidden, t, "each expert")

    def expert(t: int) -> Sharding:
        split_units("experts", experts, t, "the MoE")
        owned = {w.name: int(w.name.split(".")[1]) for w in ws if w.name.startswith("experts.")}
        return Sharding("experts", experts, t, owned=owned, output="all_to_all")

    return Parallel(tensor=tensor, expert=expert, context="pointwise")


register(OpDef(name="moe", params=MoEParams, shape=_shape, cost=_cost,
               summary="Sparse mixture of experts: top-k or Switch routing, capacity factor, shared experts.", components={"expert": ("swiglu", "geglu", "mlp", "linear")}, default_name="moe", role="ffn",
               weights=_weights, prune=_moe_prune, parallel=_moe_parallel))
