"""Softmax attention (MHA / GQA / MQA, causal or not, sliding window, cross-attention) and
Perceiver's latent cross-attention; and what every attention-like family shares: the parameter
base `AttentionBase` and the q/k/v/o projections (`projection_weights`, `projection_flops`), which
`sparse_attention.py` and `linear_attention.py` import. The cost of attention's
sequence-dependent part is 4·T_eff·H·head_dim FLOPs per token (Q·Kᵀ and P·V), with T_eff the
number of keys a query attends to on average at the costed length (see `archc/ir/cost.py`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pydantic import Field, PositiveFloat, PositiveInt

from archc.ir.cost import MAX_LEN, Cost, CostCtx, StateTensor
from archc.ir.sharding import CannotShard, Context, Parallel, Sharding, Split
from archc.ir.types import TensorType, hidden
from archc.ir.weights import Weight, dense, pack_dense
from archc.ops.registry import (
    CannotPrune,
    OpDef,
    Params,
    PruneAxis,
    ShapeError,
    divides,
    mixes_both_ways,
    no_prune,
    register,
    rows,
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
    qk_norm: bool = Field(False, description="RMSNorm of each head's queries and keys before the rotation, one "
                                             "weight [head_dim] each (Qwen3, OLMoE, Gemma 3)")
    qk_norm_eps: float = Field(1e-6, gt=0.0, description="ε of the q/k norms")
    qk_norm_width: bool = Field(False, description="the q/k norms over all heads' width at once, weights "
                                                   "[heads·head_dim] and [kv_heads·head_dim] (OLMo 2)")
    qk_norm_unit_offset: bool = Field(False, description="the q/k norms scale by 1 + weight (Gemma 3)")
    scale: PositiveFloat | None = Field(None, description="the scores' scale; default 1/√head_dim (Gemma 2: "
                                                          "query_pre_attn_scalar^-½; Granite: attention_multiplier)")
    softcap: PositiveFloat | None = Field(None, description="scores → softcap·tanh(scores / softcap) before the "
                                                            "softmax (Gemma 2)")
    out_gate: bool = Field(False, description="gate each head's output by a sigmoid of a second query projection "
                                              "(Qwen3-Next's gated attention): q_proj gives each head's queries and "
                                              "gate in turn, [heads, 2·head_dim] rows")


def check_common(p: Any, d: int) -> int:
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


def projection_flops(p: Any, d_q: int, d_kv: int, hd: int, kv: int) -> int:
    """FLOPs per token of the q, k, v and output projections (Vaswani et al.)."""
    h = p.heads
    return 2 * (d_q * h * hd + 2 * d_kv * kv * hd + h * hd * d_q)


def projection_weights(p: Any, d_q: int, d_kv: int, hd: int, kv: int,
                       prunable: bool = False) -> tuple[Weight, ...]:
    """`q_proj` d_q→H·hd, `k_proj` and `v_proj` d_kv→KV·hd (biases with `bias`), `o_proj`
    H·hd→d_q (GPT-2's scaled residual init; bias with `out_bias`). With `prunable`, the cuts of
    attention's prune rule: a query head's q rows and o columns go with `heads` and with its
    `kv_heads` group; k and v rows with `heads` under MHA, with `kv_heads` under GQA."""
    h = p.heads
    mha = kv == h
    q_cuts = (("heads",) if mha else ("heads", "kv_heads")) if prunable else ()
    kv_cuts = (("heads",) if mha else ("kv_heads",)) if prunable else ()
    return (dense("q_proj", d_q, h * hd, "projection", p.bias, cuts_out=q_cuts)
            + dense("k_proj", d_kv, kv * hd, "projection", p.bias, cuts_out=kv_cuts)
            + dense("v_proj", d_kv, kv * hd, "projection", p.bias, cuts_out=kv_cuts)
            + dense("o_proj", h * hd, d_q, "projection", p.o_bias, "residual", cuts_in=q_cuts))


def _causal_avg_context(t: int, window: int | None) -> float:
    """Average keys attended per query over positions 1..t (with an optional sliding window)."""
    if window is None or t <= window:
        return (t + 1) / 2
    return (window * (window + 1) / 2 + (t - window) * window) / t


def act_bytes(d: int, h: int, hd: int, kv: int, ctx: CostCtx) -> float:
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
    check_common(p, d)
    return ins[0]


def _attention_cost(p: AttentionParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """q, k, v, o projections (Vaswani et al.); T_eff = T (bidirectional), (T+1)/2 (causal), the window's
    average for sliding windows, the memory length for cross-attention. State: the KV cache,
    keys and values [kv_heads, min(T, window), head_dim] (a ring buffer for a window)."""
    d = width_of(ins)
    hd, kv = check_common(p, d), p.kv_head_count
    d_kv = ins[1].width if len(ins) > 1 else d
    flops = projection_flops(p, d, d_kv, hd, kv)
    t = seq_len(ins[1] if len(ins) > 1 else ins[0], ctx)
    if len(ins) > 1 or not p.causal:
        t_eff: float = min(t, p.window) if p.window else t
    else:
        t_eff = _causal_avg_context(t, p.window)
    flops += 4 * t_eff * p.heads * hd
    if p.qk_norm:  # square, mean, scale and weight per element of q and k
        flops += 4 * (p.heads + kv) * hd
    if p.out_gate:  # the gate's projection, its sigmoid and product
        flops += 2 * d * p.heads * hd + 2 * p.heads * hd
    return Cost(flops=flops, act_bytes=act_bytes(d, p.heads, hd, kv, ctx))


def _attention_weights(p: AttentionParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """The q, k, v, o projections (`projection_weights`), with `qk_norm` the norms' weights
    `q_norm.weight` and `k_norm.weight` [head_dim] (ones, zeros with a unit offset; shared by the
    heads, so no head cuts them; [heads·head_dim] and [kv_heads·head_dim] with `qk_norm_width`), and with `pos=relative_bias(...)` T5's bias table `relative_bias.weight` [buckets,
    heads]."""
    d = width_of(ins)
    hd, kv = check_common(p, d), p.kv_head_count
    d_kv = ins[1].width if len(ins) > 1 else d
    alibi = p.pos is not None and p.pos.get("op") == "alibi"
    out = projection_weights(p, d, d_kv, hd, kv, prunable=not alibi)
    if p.out_gate:  # q_proj's rows: each head's queries, then its gate
        out = tuple(replace(w, shape=(2 * w.shape[0], *w.shape[1:])) if w.name.startswith("q_proj.") else w
                    for w in out)
    if p.qk_norm:
        init = "zeros" if p.qk_norm_unit_offset else "ones"
        if p.qk_norm_width:  # one weight per channel (heads are not pruned: see the prune rule)
            out += (Weight("q_norm.weight", (p.heads * hd,), "norm", init),
                    Weight("k_norm.weight", (kv * hd,), "norm", init))
        else:
            out += (Weight("q_norm.weight", (hd,), "norm", init), Weight("k_norm.weight", (hd,), "norm", init))
    if p.pos is not None and p.pos["op"] == "relative_bias":
        cuts = (("heads", 1),) if kv == p.heads else (("heads", 1), ("kv_heads", 1))
        out += (Weight("relative_bias.weight", (p.pos["params"].get("buckets", 32), p.heads), "position",
                       cuts=cuts),)
    return out


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
    return tuple(StateTensor(n, (kv, MAX_LEN, hd), "model", cap=p.window, kv=True) for n in ("key", "value"))


def _attention_prune(p: AttentionParams, ins: list[TensorType]) -> tuple[PruneAxis, ...]:
    """Heads. MHA: a head is its q, k and v rows and its o_proj columns. GQA/MQA: a query head is
    its q rows and o_proj columns, and each kv group keeps the same number of query heads (kv
    heads stay: removing one would remove its whole group) — or, as `kv_heads`, whole groups: a
    kv head's k and v rows with its query heads' q rows and o_proj columns (the KV cache shrinks
    too). head_dim is written explicitly, as it would otherwise follow d/heads. Zeroed, a head's
    output is 0 before o_proj: exact."""
    if p.pos is not None and p.pos.get("op") == "alibi":
        raise CannotPrune("ALiBi's slopes are a function of the head count (2^(−8h/H)): removing heads would "
                          "change every other head's slope", ("heads",))
    if p.qk_norm and p.qk_norm_width:
        raise CannotPrune("the q/k norms over the whole width (OLMo 2) average over every head's channels: removing "
                          "a head would rescale the others", ("heads", "kv_heads"))
    d = width_of(ins)
    h, kv, hd = p.heads, p.kv_head_count, p.head_dim_for(d)
    mha = kv == h
    rel = p.pos is not None and p.pos.get("op") == "relative_bias"
    q_rows = 2 * hd if p.out_gate else hd  # a gated head's q_proj rows: its queries and its gate

    def slices(u: int) -> dict:
        out = {"q_proj.weight": (0, rows(u, hd)), "o_proj.weight": (1, rows(u, hd))}
        names = ("q_proj", "k_proj", "v_proj") if mha else ("q_proj",)
        for name in names:
            width = q_rows if name == "q_proj" else hd
            out[f"{name}.weight"] = (0, rows(u, width))
            if p.bias:
                out[f"{name}.bias"] = (0, rows(u, width))
        if rel:
            out["relative_bias.weight"] = (1, [u])
        return out

    def params(kept: list[int]) -> dict:
        new = {"heads": len(kept), "head_dim": hd}
        if mha and p.kv_heads is not None:
            new["kv_heads"] = len(kept)
        return new

    heads = PruneAxis("heads", h, slices, params, lambda u: ("o_proj", rows(u, hd)), groups=1 if mha else kv)
    if mha:
        return (heads,)
    per = h // kv

    def group(g: int) -> dict:
        q = [c for i in range(g * per, (g + 1) * per) for c in rows(i, hd)]
        qg = [c for i in range(g * per, (g + 1) * per) for c in rows(i, q_rows)]
        out = {"q_proj.weight": (0, qg), "o_proj.weight": (1, q), "k_proj.weight": (0, rows(g, hd)),
               "v_proj.weight": (0, rows(g, hd))}
        if p.bias:
            out.update({"q_proj.bias": (0, qg), "k_proj.bias": (0, rows(g, hd)), "v_proj.bias": (0, rows(g, hd))})
        if rel:
            out["relative_bias.weight"] = (1, list(range(g * per, (g + 1) * per)))
        return out

    groups = PruneAxis("kv_heads", kv, group,
                       lambda kept: {"heads": len(kept) * per, "kv_heads": len(kept), "head_dim": hd},
                       lambda g: ("o_proj", [c for i in range(g * per, (g + 1) * per) for c in rows(i, hd)]))
    return heads, groups


def head_sharding(heads: int, kv: int, degree: int, weights: tuple[Weight, ...], state: tuple[str, ...],
                  what: str, width_norms: bool = False) -> Sharding:
    """Megatron's split of multi-head attention over `degree` ranks, by the declared weights' names:
    q_proj rows (Longformer's global q/k/v too) and o_proj columns by query heads; k_proj / v_proj
    rows and the `state` tensors (axis 0) by key/value heads — whole kv groups per rank while
    `degree` ≤ kv_heads, each kv head replicated on the degree/kv_heads ranks whose query heads
    read it beyond; a packed qkv_proj by parts; q/k norms over the whole width (`width_norms`, OLMo
    2) as q and k; T5's relative-bias table by its head columns. Every other weight (o_proj's bias,
    added once after the all-reduce; per-head-dim q/k norms; Linformer's sequence projections;
    Performer's features; Perceiver's latents) is replicated. Output: o_proj's partial sums."""
    if degree <= kv:
        if kv % degree:
            raise CannotShard(f"{kv} key/value heads of {what} do not split {degree} ways")
        unit, units, r = ("heads" if kv == heads else "kv_heads"), kv, 1
    else:
        if degree % kv or heads % degree:
            raise CannotShard(f"{heads} query heads over {kv} key/value heads of {what} do not split {degree} "
                              "ways (kv heads are replicated only when the degree is a multiple of them)")
        unit, units, r = "heads", heads, degree // kv
    q, kv_split = Split(0), Split(0, replicas=(r,))
    splits: dict[str, Split] = {}
    for w in weights:
        layer = w.name.rsplit(".", 1)[0]
        if layer in ("q_proj", "q_global", "k_global", "v_global") or (layer == "q_norm" and width_norms):
            splits[w.name] = q
        elif layer in ("k_proj", "v_proj") or (layer == "k_norm" and width_norms):
            splits[w.name] = kv_split
        elif layer == "qkv_proj":
            splits[w.name] = Split(0, tuple(n for _, n in w.packs), (1, r, r))
        elif w.name in ("o_proj.weight", "relative_bias.weight"):
            splits[w.name] = Split(1)
    after = tuple(w.name for w in weights if w.name == "o_proj.bias")
    return Sharding(unit, units, degree, splits, state={n: kv_split for n in state}, after_reduce=after)


def _attention_parallel(p: AttentionParams, ins: list[TensorType], packed: bool = False) -> Parallel:
    """By heads (`head_sharding`); a sequence split is a ring of key/value blocks for
    self-attention, nothing for cross-attention (queries never see each other; every rank reads
    the whole memory)."""
    weights = (_packed_weights if packed else _attention_weights)(p, ins)
    state = () if len(ins) > 1 else ("key", "value")
    context: Context = "pointwise" if len(ins) > 1 else "ring"
    return Parallel(tensor=lambda t: head_sharding(p.heads, p.kv_head_count, t, weights, state, "attention",
                                                   p.qk_norm and p.qk_norm_width),
                    context=context)


def heads_parallel(weights: Any, what: str, state: tuple[str, ...] = (), context: Context = "none",
                   why_context: str = "") -> Any:
    """The parallelism rule of an op with multi-head q/k/v/o projections (`head_sharding` over the
    op's declared `weights(p, ins)`, its `state` tensors split by head)."""
    def rule(p: Any, ins: list[TensorType]) -> Parallel:
        ws = weights(p, ins)
        return Parallel(tensor=lambda t: head_sharding(p.heads, p.kv_head_count, t, ws, state, what),
                        context=context, why_context=why_context)
    return rule


ATTENTION = register(OpDef(
    name="attention", params=AttentionParams, shape=_attention_shape, cost=_attention_cost,
    summary="Softmax attention: MHA / GQA / MQA, causal or bidirectional, sliding window, cross-attention via kv=.", optional_inputs=("kv",), components={"pos": ("rope", "alibi", "relative_bias")}, default_name="attn",
    role="mixer", causal=_attention_causal, state=_attention_state, weights=_attention_weights,
    prune=_attention_prune, parallel=_attention_parallel))


def _packed_weights(p: AttentionParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """`qkv_proj` d→(H + 2·KV)·hd, the canonical q_proj, k_proj, v_proj packed along the rows
    (queries, then keys, then values: GQA's narrower k and v included), then `o_proj` (the
    `pack_qkv` pass makes this op; checkpoints keep the canonical layout)."""
    return pack_dense(_attention_weights(p, ins), "qkv_proj", ("q_proj", "k_proj", "v_proj"))


register(replace(
    ATTENTION, name="attention_packed", optional_inputs=(), weights=_packed_weights, fuses=("attention",),
    prune=no_prune, parallel=lambda p, ins: _attention_parallel(p, ins, packed=True),
    summary="Self-attention (`attention` without `kv=`) with its q, k and v projections packed into one matmul "
            "(made by the `pack_qkv` pass)."))



def plain_shape(p: Any, ins: list[TensorType]) -> TensorType:
    check_common(p, width_of(ins))
    return ins[0]


def plain_weights(p: Any, ins: list[TensorType]) -> tuple[Weight, ...]:
    """The q, k, v, o projections of multi-head self-attention (`projection_weights`, one key/value
    head per query head): the weights of the sparse and linear attention ops, with the cuts of
    `plain_prune`."""
    d = width_of(ins)
    return projection_weights(p, d, d, check_common(p, d), p.heads, prunable=True)


def plain_prune(extra: tuple[str, ...] = ()) -> Any:
    """The prune rule of the sparse and linear attention ops (one key/value head per query head):
    a head is its q, k and v rows — and those of the `extra` projections, Longformer's global q, k
    and v — and its o_proj columns; what the heads share stays whole (Linformer's sequence
    projections, Performer's random features; BigBird's block layout is the same for every head).
    Zeroed, a head's output is 0 before o_proj: exact."""
    def rule(p: Any, ins: list[TensorType]) -> tuple[PruneAxis, ...]:
        hd = check_common(p, width_of(ins))

        def slices(u: int) -> dict:
            out: dict = {"o_proj.weight": (1, rows(u, hd))}
            for name in ("q_proj", "k_proj", "v_proj", *extra):
                out[f"{name}.weight"] = (0, rows(u, hd))
                if p.bias:
                    out[f"{name}.bias"] = (0, rows(u, hd))
            return out

        return (PruneAxis("heads", p.heads, slices, lambda kept: {"heads": len(kept), "head_dim": hd},
                          lambda u: ("o_proj", rows(u, hd))),)
    return rule


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
    """q from the latents (d_latent), k and v from the input (d), o back to d_latent (Jaegle et
    al.). Cost per input token: k, v projections plus, spread over T, the latents' queries
    attending all T inputs."""
    d = width_of(ins)
    dl = p.d_latent or d
    hd = p.head_dim_for(dl)
    h = p.heads
    t = seq_len(ins[0], ctx)
    flops = 2 * 2 * d * h * hd + (2 * p.latents * (dl * h * hd + h * hd * dl) + 4 * p.latents * t * h * hd) / t
    return Cost(flops=flops, act_bytes=(d + 2 * h * hd) * ctx.dtype_bytes)


def _latent_weights(p: LatentParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """The latent array `latents` [N, d_latent] (N(0, 0.02)), then q from the latents, k and v
    from the input, o back to d_latent (`projection_weights`)."""
    d = width_of(ins)
    dl = p.d_latent or d
    return (Weight("latents", (p.latents, dl), "memory"), *projection_weights(p, dl, d, p.head_dim_for(dl), p.heads))


register(OpDef(name="latent_attention", params=LatentParams, shape=_latent_shape, cost=_latent_cost,
               summary="Perceiver latent cross-attention: N learned latents attend to the input; output [B, N, d].", default_name="cross_attn", role="mixer", causal=mixes_both_ways,
               weights=_latent_weights,
               parallel=heads_parallel(_latent_weights, "latent attention", why_context="its N latents attend to the whole input")))
