"""Kernelized linear attention (Katharopoulos et al.) and Performer's FAVOR+ (Choromanski et
al.): φ(q)(φ(k)ᵀv), linear in T, with a recurrent step when causal."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveInt

from archc.ir.cost import Cost, CostCtx, StateTensor
from archc.ir.sharding import Parallel
from archc.ir.types import TensorType
from archc.ir.weights import Weight
from archc.ops.attention import (
    AttentionBase,
    act_bytes,
    check_common,
    heads_parallel,
    plain_prune,
    plain_shape,
    plain_weights,
    projection_flops,
)
from archc.ops.registry import OpDef, register, width_of


class LinearAttentionParams(AttentionBase):
    feature_map: Literal["elu", "relu"] = Field("elu", description="φ with φ(q)·φ(k) ≥ 0 (elu+1 as Katharopoulos et al.)")
    causal: bool = True


def _linear_cost(p: LinearAttentionParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """q, k, v, o; per token the state update S += φ(k)ᵀv and read φ(q)S cost 4·H·hd² FLOPs.
    State: S [H, hd, hd] and the normalizer z [H, hd], constant in T."""
    d = width_of(ins)
    hd = check_common(p, d)
    flops = projection_flops(p, d, d, hd, p.heads)
    return Cost(flops=flops + 4 * p.heads * hd * hd, act_bytes=act_bytes(d, p.heads, hd, p.heads, ctx))


def _kernel_state(features: int, p: Any, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """S [H, m, head_dim] and the normalizer z [H, m] in fp32 (m = the feature map's width);
    none when bidirectional."""
    if not p.causal:
        return ()
    return (StateTensor("kv", (p.heads, features, p.head_dim_for(width_of(ins)))),
            StateTensor("normalizer", (p.heads, features)))


def _linear_state(p: LinearAttentionParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    return _kernel_state(p.head_dim_for(width_of(ins)), p, ins)


def _by_flag(p: Any, ins: list[TensorType]) -> bool | None:
    return p.causal


def _kernel_parallel(weights: Any) -> Any:
    """By heads, the state S [H, ·, ·] and z [H, ·] with them; causal, a split sequence passes
    (S, z) from rank to rank (a prefix sum), bidirectional it would need their total first."""
    def rule(p: Any, ins: list[TensorType]) -> Parallel:
        context = "state" if p.causal else "none"
        return heads_parallel(weights, "linear attention", ("kv", "normalizer"), context,
                              "" if p.causal else "bidirectional: every position reads the whole sequence's sums")(p, ins)
    return rule


register(OpDef(name="linear_attention", params=LinearAttentionParams, shape=plain_shape, cost=_linear_cost,
               summary="Kernelized linear attention (Katharopoulos et al.): φ(q)(φ(k)ᵀv), O(T), recurrent step.", default_name="attn", role="mixer", causal=_by_flag, state=_linear_state,
               weights=plain_weights, prune=plain_prune(), parallel=_kernel_parallel(plain_weights)))


class PerformerParams(AttentionBase):
    features: PositiveInt = Field(256, description="random features m of FAVOR+")
    causal: bool = True


def _performer_cost(p: PerformerParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """q, k, v, o (the random projection is a buffer, not a parameter; Choromanski et al.). Per
    token: features for q and k (2·2·hd·m·H) and the linear-attention product (4·H·m·hd).
    State: S [H, m, hd] and z [H, m], kept in fp32."""
    d = width_of(ins)
    hd = check_common(p, d)
    flops = projection_flops(p, d, d, hd, p.heads)
    m = p.features
    return Cost(flops=flops + 4 * hd * m * p.heads + 4 * p.heads * m * hd,
                act_bytes=act_bytes(d, p.heads, hd, p.heads, ctx) + 2 * p.heads * m * ctx.dtype_bytes)


def _performer_weights(p: PerformerParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """q, k, v, o, and the random projection `omega` [m, head_dim]: a buffer, drawn orthogonal
    (FAVOR+) by the module's init, saved with the weights and never trained."""
    omega = Weight("omega", (p.features, p.head_dim_for(width_of(ins))), "features", "own", buffer=True)
    return (*plain_weights(p, ins), omega)


def _performer_state(p: PerformerParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    return _kernel_state(p.features, p, ins)


register(OpDef(name="performer_attention", params=PerformerParams, shape=plain_shape, cost=_performer_cost,
               summary="Performer FAVOR+: positive orthogonal random features approximating softmax attention.", default_name="attn", role="mixer", causal=_by_flag, state=_performer_state,
               weights=_performer_weights, prune=plain_prune(), parallel=_kernel_parallel(_performer_weights)))

