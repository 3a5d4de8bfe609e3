"""Conditional computation around a block: mixture-of-depths (Raposo et al., 2024) and adaptive
computation time (Graves, 2016) as in the Universal Transformer (Dehghani et al., 2019).

Both are higher-order: `mod(x, block=decoder, capacity=0.125)` holds the lowered block as its body.
"""

from __future__ import annotations

from pydantic import Field, PositiveInt

from archc.ir.cost import MAX_LEN, Cost, CostCtx, StateTensor
from archc.ir.types import TensorType
from archc.ir.weights import dense
from archc.ops.registry import (
    OpDef,
    Params,
    ShapeError,
    hidden_to_hidden,
    register,
    replicated_because,
    width_of,
)


class MoDParams(Params):
    capacity: float = Field(0.125, gt=0.0, le=1.0, description="fraction of tokens routed through the block")
    aux_loss: float = Field(0.01, ge=0.0, description="weight of the router's BCE loss that teaches it to "
                            "predict the top-k choice causally (for decoding)")


def _mod_cost(p: MoDParams, ins: list[TensorType], out: TensorType, ctx: CostCtx, body: Cost) -> Cost:
    """The block's parameters; compute and activations are the block's times `capacity` plus the
    router's 2·d per token."""
    d = width_of(ins)
    return Cost(flops=2 * d, act_bytes=d * ctx.dtype_bytes) + body.scale_compute(p.capacity)


def _mod_state(p: MoDParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """Which past positions went through the block, [max_len] bool (the body's KV caches hold
    entries only for those), then the body's state."""
    return (StateTensor("routed", (MAX_LEN,), "bool"),)


register(OpDef(name="mod", params=MoDParams, shape=hidden_to_hidden, cost=_mod_cost,
               summary="Mixture-of-depths: a router picks the top capacity·T tokens to go through the block; "
               "the rest skip it.", takes_block=True, default_name="mod", role="wrapper",
               state=_mod_state,
               weights=lambda p, ins: dense("router", width_of(ins), 1, "router", True, bias_init="own"),
               parallel=replicated_because("a wrapper: its body runs whole on every rank", why_context="routing ranks tokens over the whole sequence")))


class ACTParams(Params):
    max_steps: PositiveInt = Field(8, description="upper bound on ponder steps N")
    threshold: float = Field(0.99, gt=0.0, lt=1.0, description="halt once the cumulative halting prob. exceeds it")
    ponder_cost: float = Field(0.01, ge=0.0, description="weight τ of the ponder cost in the loss")


def _act_cost(p: ACTParams, ins: list[TensorType], out: TensorType, ctx: CostCtx, body: Cost) -> Cost:
    """The shared block's parameters once; compute is an upper bound of max_steps applications
    of the block and the halting unit (the realized count is data dependent)."""
    d = width_of(ins)
    return Cost(flops=2 * d * p.max_steps) + body.scale_compute(p.max_steps)


def _act_shape(p: ACTParams, ins: list[TensorType]) -> TensorType:
    if p.max_steps > 64:
        raise ShapeError("max_steps above 64", arg="max_steps", code="ARC0305")
    return hidden_to_hidden(p, ins)


def _act_body_state(p: ACTParams, body: tuple[StateTensor, ...]) -> tuple[StateTensor, ...]:
    """One copy of the block's state per ponder step, `step{n}.<name>` (step n's KV caches hold
    the step-n states of earlier tokens)."""
    return tuple(s.renamed(f"step{n}.{s.name}") for n in range(p.max_steps) for s in body)


register(OpDef(name="act", params=ACTParams, shape=_act_shape, cost=_act_cost,
               summary="Adaptive computation time: apply the (shared) block until the halting probability "
               "passes the threshold; returns the ponder cost as an auxiliary loss.",
               takes_block=True, default_name="act", role="wrapper", body_state=_act_body_state,
               weights=lambda p, ins: dense("halting", width_of(ins), 1, "router", True, bias_init="own"),
               parallel=replicated_because("a wrapper: its body runs whole on every rank", why_context="its body's attention reads the whole sequence at every ponder step")))
