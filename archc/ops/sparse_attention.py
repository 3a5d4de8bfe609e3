"""Sparse and low-rank attention: Longformer's sliding window with global tokens, BigBird's
block-sparse pattern, Linformer's sequence projections. All bidirectional."""

from __future__ import annotations

from typing import Any

from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from archc.ir.cost import Cost, CostCtx
from archc.ir.types import TensorType
from archc.ir.weights import Weight, dense
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
from archc.ops.registry import OpDef, mixes_both_ways, register, seq_len, width_of


class LongformerParams(AttentionBase):
    window: PositiveInt = Field(description="local window: each token attends window/2 keys on each side")
    global_tokens: list[NonNegativeInt] = Field([0], description="positions with global attention (e.g. [CLS])")
    dilation: PositiveInt = Field(1, description="gap between attended keys in the local window")
    bias: bool = True

    @model_validator(mode="after")
    def _even_window(self) -> LongformerParams:
        if self.window % 2:
            raise ValueError("window must be even (window/2 keys on each side)")
        return self


def _sparse_cost(p: Any, ins: list[TensorType], t_eff: float, ctx: CostCtx, extra_proj: int = 0) -> Cost:
    d = width_of(ins)
    hd = check_common(p, d)
    flops = projection_flops(p, d, d, hd, p.heads)
    flops += extra_proj * 2 * d * p.heads * hd + 4 * t_eff * p.heads * hd
    return Cost(flops=flops, act_bytes=act_bytes(d, p.heads, hd, p.heads, ctx))


def _longformer_weights(p: LongformerParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """q, k, v, o, then the global tokens' own `q_global`, `k_global`, `v_global` d→H·hd (with
    biases when `bias`), as transformers' LongformerSelfAttention."""
    d = width_of(ins)
    inner = p.heads * check_common(p, d)
    return plain_weights(p, ins) + tuple(w for n in ("q_global", "k_global", "v_global")
                                          for w in dense(n, d, inner, "projection", p.bias, cuts_out=("heads",)))


def _longformer_cost(p: LongformerParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """q, k, v, o plus separate global q, k, v projections (Beltagy et al.; transformers'
    LongformerSelfAttention). T_eff ≈ window + 1 + 2·globals (globals attend to, and are attended
    by, every token)."""
    t = seq_len(ins[0], ctx)
    g = len(p.global_tokens)
    return _sparse_cost(p, ins, min(t, p.window + 1) + 2 * g, ctx, extra_proj=3)


register(OpDef(name="longformer_attention", params=LongformerParams, shape=plain_shape, cost=_longformer_cost,
               summary="Longformer attention: sliding window (optionally dilated) plus global tokens.", default_name="attn", role="mixer", causal=mixes_both_ways,
               weights=_longformer_weights, prune=plain_prune(("q_global", "k_global", "v_global")),
               parallel=heads_parallel(_longformer_weights, "Longformer attention", why_context="global tokens attend to the whole sequence")))


class BigBirdParams(AttentionBase):
    block: PositiveInt = Field(64, description="block size of the block-sparse pattern")
    window_blocks: PositiveInt = Field(3, description="blocks in the sliding window (odd: centred)")
    global_blocks: NonNegativeInt = Field(2, description="first/last blocks attending everywhere")
    random_blocks: NonNegativeInt = Field(3, description="random key blocks per query block")
    bias: bool = True


def _bigbird_cost(p: BigBirdParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """q, k, v, o (Zaheer et al.). T_eff = block·(window + global + random blocks), capped at T."""
    t = seq_len(ins[0], ctx)
    return _sparse_cost(p, ins, min(t, p.block * (p.window_blocks + p.global_blocks + p.random_blocks)), ctx)


register(OpDef(name="bigbird_attention", params=BigBirdParams, shape=plain_shape, cost=_bigbird_cost,
               summary="BigBird block-sparse attention: window + global + random blocks.",
               default_name="attn", role="mixer", causal=mixes_both_ways, weights=plain_weights,
               prune=plain_prune(), parallel=heads_parallel(plain_weights, "BigBird attention", why_context="global and random blocks reach across the sequence")))


class LinformerParams(AttentionBase):
    k: PositiveInt = Field(256, description="projected sequence length of keys and values")
    max_len: PositiveInt = Field(description="longest input: E, F are [max_len, k] projections")
    bias: bool = True


def _linformer_cost(p: LinformerParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """q, k, v, o (Wang et al.); T_eff = k (every query attends the k projected keys)."""
    d = width_of(ins)
    hd = check_common(p, d)
    c = _sparse_cost(p, ins, p.k, ctx)
    # projecting keys and values along the sequence: 2·k multiply-adds per token per channel
    return c + Cost(flops=2 * 2 * p.k * p.heads * hd)


def _linformer_weights(p: LinformerParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """The sequence projections `e_proj` (keys) and `f_proj` (values) [max_len, k], U(±1/√k)
    (own init), then q, k, v, o."""
    seq = tuple(Weight(n, (p.max_len, p.k), "projection", "own") for n in ("e_proj", "f_proj"))
    return seq + plain_weights(p, ins)


register(OpDef(name="linformer_attention", params=LinformerParams, shape=plain_shape, cost=_linformer_cost,
               summary="Linformer: keys and values projected along the sequence to k rows (linear in T).", default_name="attn", role="mixer", causal=mixes_both_ways,
               weights=_linformer_weights, prune=plain_prune(),
               parallel=heads_parallel(_linformer_weights, "Linformer attention", why_context="E and F project along the whole sequence")))

