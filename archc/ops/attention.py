"""The attention family: dense softmax attention (MHA / GQA / MQA, causal or not, sliding window,
cross-attention), the sparse patterns of Longformer and BigBird, the low-rank Linformer, kernelized
linear attention and Performer's FAVOR+, and Perceiver's latent cross-attention.

All of them share the q/k/v/o projection accounting in `_projections`. The cost of attention's
sequence-dependent part is 4·T_eff·H·head_dim FLOPs per token (Q·Kᵀ and P·V), with T_eff the
number of keys a query attends to on average at the costed length (see `archc/ir/cost.py`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from archc.ir.cost import MAX_LEN, Cost, CostCtx, StateTensor
from archc.ir.types import TensorType, hidden
from archc.ops.registry import (
    OpDef,
    Params,
    ShapeError,
    divides,
    mixes_both_ways,
    register,
    seq_len,
    width_of,
)


class AttentionBase(Params):
    heads: PositiveInt = Field(description="number of query heads")
    head_dim: PositiveInt | None = Field(None, description="per-head width; default width / heads")
    bias: bool = Field(False, description="biases on the q, k, v projections")
    out_bias: bool | None = Field(None, description="bias on the output projection; default: `bias`")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="attention-probability dropout in training")

    @property
    def o_bias(self) -> bool:
        return self.bias if self.out_bias is None else self.out_bias

    def head_dim_for(self, d: int) -> int:
        """The per-head width on inputs of width d: `head_dim`, else d / heads (a shape error if
        heads does not divide d)."""
        if self.head_dim is not None:
            return self.head_dim
        divides(self.heads, d, "heads", "the width", arg="heads",
                hint=f"choose heads dividing {d}, or give head_dim explicitly")
        return d // self.heads

    @property
    def kv_head_count(self) -> int:
        """Key/value heads: `kv_heads` where the op has it (GQA / MQA), else one per query head."""
        return getattr(self, "kv_heads", None) or self.heads


class AttentionParams(AttentionBase):
    kv_heads: PositiveInt | None = Field(None, description="key/value heads: =heads MHA, 1 MQA, else GQA")
    causal: bool = Field(False, description="each position attends only to itself and the past")
    window: PositiveInt | None = Field(None, description="sliding window: attend to the last `window` keys")
    pos: dict[str, Any] | None = Field(None, description="relative positions: rope(...), alibi(), relative_bias(...)")


def _check_common(p: Any, d: int) -> int:
    hd = p.head_dim_for(d)
    kv = p.kv_head_count
    divides(kv, p.heads, "kv_heads", "heads", arg="kv_heads",
            hint="each key/value head serves an equal group of query heads (GQA)")
    pos = getattr(p, "pos", None)
    if pos is not None and pos["op"] == "rope":
        rotated = int(hd * pos["params"].get("fraction", 1.0))
        if rotated % 2:
            raise ShapeError(f"rope rotates pairs of dimensions, but {rotated} of head_dim {hd} are rotated",
                             "use an even head_dim (or a rotary fraction giving an even count)", arg="pos",
                             code="ARC0303")
    return hd


def _projections(p: Any, d_q: int, d_kv: int, hd: int, kv: int) -> tuple[int, int]:
    """(params, FLOPs/token) of the q, k, v and output projections (Vaswani et al.)."""
    h = p.heads
    params = d_q * h * hd + 2 * d_kv * kv * hd + h * hd * d_q
    if p.bias:
        params += h * hd + 2 * kv * hd
    if p.o_bias:
        params += d_q
    flops = 2 * (d_q * h * hd + 2 * d_kv * kv * hd + h * hd * d_q)
    return params, flops


def _causal_avg_context(t: int, window: int | None) -> float:
    """Average keys attended per query over positions 1..t (with an optional sliding window)."""
    if window is None or t <= window:
        return (t + 1) / 2
    return (window * (window + 1) / 2 + (t - window) * window) / t


def _act_bytes(d: int, h: int, hd: int, kv: int, ctx: CostCtx) -> float:
    # saved for backward: input, q, k, v, attention output (pre-o-proj), and the softmax statistics
    return (d + h * hd + 2 * kv * hd + h * hd) * ctx.dtype_bytes + h * 4


def _attention_shape(p: AttentionParams, ins: list[TensorType]) -> TensorType:
    d = width_of(ins)
    if len(ins) > 1:
        width_of(ins, 1, "kv (the cross-attention memory)")
        if ins[1].shape[0] != ins[0].shape[0]:
            raise ShapeError(f"query and memory batch dimensions differ: {ins[0]} vs {ins[1]}")
        if p.causal:
            raise ShapeError("cross-attention cannot be causal: the memory is not in the query's time axis",
                             "drop `causal=true` or the `kv=` argument", arg="causal")
    _check_common(p, d)
    return ins[0]


def _attention_cost(p: AttentionParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """Projections as in `_projections`; T_eff = T (bidirectional), (T+1)/2 (causal), the window's
    average for sliding windows, the memory length for cross-attention. State: the KV cache,
    keys and values [kv_heads, min(T, window), head_dim] (a ring buffer for a window)."""
    d = width_of(ins)
    hd, kv = _check_common(p, d), p.kv_head_count
    d_kv = ins[1].width if len(ins) > 1 else d
    params, flops = _projections(p, d, d_kv, hd, kv)
    if p.pos is not None and p.pos["op"] == "relative_bias":
        params += p.pos["params"].get("buckets", 32) * p.heads
    t = seq_len(ins[1] if len(ins) > 1 else ins[0], ctx)
    if len(ins) > 1 or not p.causal:
        t_eff: float = min(t, p.window) if p.window else t
    else:
        t_eff = _causal_avg_context(t, p.window)
    flops += 4 * t_eff * p.heads * hd
    return Cost(params, flops, _act_bytes(d, p.heads, hd, kv, ctx))


def _attention_causal(p: AttentionParams, ins: list[TensorType]) -> bool | None:
    # cross-attention reads another sequence; each query position stays on its own
    return None if len(ins) > 1 else p.causal


def _attention_state(p: AttentionParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """The KV cache, keys and values [kv_heads, max_len, head_dim] in the model's dtype, a ring
    buffer of `window` slots for a sliding window; none for cross-attention (it recomputes the
    memory's keys and values)."""
    if len(ins) > 1:
        return ()
    kv, hd = p.kv_head_count, p.head_dim_for(width_of(ins))
    return tuple(StateTensor(n, (kv, MAX_LEN, hd), "model", cap=p.window) for n in ("key", "value"))


register(OpDef(
    "attention", AttentionParams, _attention_shape, _attention_cost,
    "Softmax attention: MHA / GQA / MQA, causal or bidirectional, sliding window, cross-attention via kv=.",
    "attention", optional_inputs=("kv",), components={"pos": ("position",)}, default_name="attn",
    role="mixer", causal=_attention_causal, state=_attention_state, residual_weights=("o_proj.weight",),
))


# ---- sparse patterns ------------------------------------------------------------------------


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


def _plain_shape(p: Any, ins: list[TensorType]) -> TensorType:
    _check_common(p, width_of(ins))
    return ins[0]


def _sparse_cost(p: Any, ins: list[TensorType], t_eff: float, extra_params: int = 0,
                 ctx: CostCtx | None = None, extra_proj: int = 0) -> Cost:
    assert ctx is not None
    d = width_of(ins)
    hd = _check_common(p, d)
    params, flops = _projections(p, d, d, hd, p.heads)
    params += extra_params + extra_proj * (d * p.heads * hd + p.heads * hd)
    flops += extra_proj * 2 * d * p.heads * hd + 4 * t_eff * p.heads * hd
    return Cost(params, flops, _act_bytes(d, p.heads, hd, p.heads, ctx))


def _longformer_cost(p: LongformerParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """q, k, v, o plus separate global q, k, v projections (Beltagy et al.; transformers'
    LongformerSelfAttention). T_eff ≈ window + 1 + 2·globals (globals attend to, and are attended
    by, every token)."""
    t = seq_len(ins[0], ctx)
    g = len(p.global_tokens)
    return _sparse_cost(p, ins, min(t, p.window + 1) + 2 * g, ctx=ctx, extra_proj=3)


register(OpDef("longformer_attention", LongformerParams, _plain_shape, _longformer_cost,
               "Longformer attention: sliding window (optionally dilated) plus global tokens.",
               "attention", default_name="attn", role="mixer", causal=mixes_both_ways,
               residual_weights=("o_proj.weight",)))


class BigBirdParams(AttentionBase):
    block: PositiveInt = Field(64, description="block size of the block-sparse pattern")
    window_blocks: PositiveInt = Field(3, description="blocks in the sliding window (odd: centred)")
    global_blocks: NonNegativeInt = Field(2, description="first/last blocks attending everywhere")
    random_blocks: NonNegativeInt = Field(3, description="random key blocks per query block")
    bias: bool = True


def _bigbird_cost(p: BigBirdParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """q, k, v, o (Zaheer et al.). T_eff = block·(window + global + random blocks), capped at T."""
    t = seq_len(ins[0], ctx)
    return _sparse_cost(p, ins, min(t, p.block * (p.window_blocks + p.global_blocks + p.random_blocks)), ctx=ctx)


register(OpDef("bigbird_attention", BigBirdParams, _plain_shape, _bigbird_cost,
               "BigBird block-sparse attention: window + global + random blocks.", "attention",
               default_name="attn", role="mixer", causal=mixes_both_ways, residual_weights=("o_proj.weight",)))


class LinformerParams(AttentionBase):
    k: PositiveInt = Field(256, description="projected sequence length of keys and values")
    max_len: PositiveInt = Field(description="longest input: E, F are [max_len, k] projections")
    bias: bool = True


def _linformer_cost(p: LinformerParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """q, k, v, o plus the sequence projections E and F, max_len·k each (Wang et al.);
    T_eff = k (every query attends the k projected keys)."""
    d = width_of(ins)
    hd = _check_common(p, d)
    c = _sparse_cost(p, ins, p.k, extra_params=2 * p.max_len * p.k, ctx=ctx)
    # projecting keys and values along the sequence: 2·k multiply-adds per token per channel
    return c + Cost(flops=2 * 2 * p.k * p.heads * hd)


register(OpDef("linformer_attention", LinformerParams, _plain_shape, _linformer_cost,
               "Linformer: keys and values projected along the sequence to k rows (linear in T).",
               "attention", default_name="attn", role="mixer", causal=mixes_both_ways,
               residual_weights=("o_proj.weight",)))


class LinearAttentionParams(AttentionBase):
    feature_map: Literal["elu", "relu"] = Field("elu", description="φ with φ(q)·φ(k) ≥ 0 (elu+1 as Katharopoulos et al.)")
    causal: bool = True


def _linear_cost(p: LinearAttentionParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """q, k, v, o; per token the state update S += φ(k)ᵀv and read φ(q)S cost 4·H·hd² FLOPs.
    State: S [H, hd, hd] and the normalizer z [H, hd], constant in T."""
    d = width_of(ins)
    hd = _check_common(p, d)
    params, flops = _projections(p, d, d, hd, p.heads)
    return Cost(params, flops + 4 * p.heads * hd * hd, _act_bytes(d, p.heads, hd, p.heads, ctx))


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


register(OpDef("linear_attention", LinearAttentionParams, _plain_shape, _linear_cost,
               "Kernelized linear attention (Katharopoulos et al.): φ(q)(φ(k)ᵀv), O(T), recurrent step.",
               "attention", default_name="attn", role="mixer", causal=_by_flag, state=_linear_state,
               residual_weights=("o_proj.weight",)))


class PerformerParams(AttentionBase):
    features: PositiveInt = Field(256, description="random features m of FAVOR+")
    causal: bool = True


def _performer_cost(p: PerformerParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """q, k, v, o (the random projection is a buffer, not a parameter; Choromanski et al.). Per
    token: features for q and k (2·2·hd·m·H) and the linear-attention product (4·H·m·hd).
    State: S [H, m, hd] and z [H, m], kept in fp32."""
    d = width_of(ins)
    hd = _check_common(p, d)
    params, flops = _projections(p, d, d, hd, p.heads)
    m = p.features
    return Cost(params, flops + 4 * hd * m * p.heads + 4 * p.heads * m * hd,
                _act_bytes(d, p.heads, hd, p.heads, ctx) + 2 * p.heads * m * ctx.dtype_bytes)


def _performer_state(p: PerformerParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    return _kernel_state(p.features, p, ins)


register(OpDef("performer_attention", PerformerParams, _plain_shape, _performer_cost,
               "Performer FAVOR+: positive orthogonal random features approximating softmax attention.",
               "attention", default_name="attn", role="mixer", causal=_by_flag, state=_performer_state,
               residual_weights=("o_proj.weight",)))


class LatentParams(AttentionBase):
    latents: PositiveInt = Field(description="number of learned latent vectors (the output length)")
    d_latent: PositiveInt | None = Field(None, description="latent width; default: the input width")
    heads: PositiveInt = 1
    bias: bool = True


def _latent_shape(p: LatentParams, ins: list[TensorType]) -> TensorType:
    d = width_of(ins)
    dl = p.d_latent or d
    p.head_dim_for(dl)
    return hidden(ins[0].shape[0], p.latents, dl)


def _latent_cost(p: LatentParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """The latent array latents·d_latent, q from the latents (d_latent), k and v from the input (d),
    o back to d_latent (Jaegle et al.). Cost per input token: k, v projections plus, spread over
    T, the latents' queries attending all T inputs."""
    d = width_of(ins)
    dl = p.d_latent or d
    hd = p.head_dim_for(dl)
    h = p.heads
    params = p.latents * dl + dl * h * hd + 2 * d * h * hd + h * hd * dl
    if p.bias:
        params += 3 * h * hd
    if p.o_bias:
        params += dl
    t = seq_len(ins[0], ctx)
    flops = 2 * 2 * d * h * hd + (2 * p.latents * (dl * h * hd + h * hd * dl) + 4 * p.latents * t * h * hd) / t
    return Cost(params, flops, (d + 2 * h * hd) * ctx.dtype_bytes)


register(OpDef("latent_attention", LatentParams, _latent_shape, _latent_cost,
               "Perceiver latent cross-attention: N learned latents attend to the input; output [B, N, d].",
               "attention", default_name="cross_attn", role="mixer", causal=mixes_both_ways,
               residual_weights=("o_proj.weight",)))
