"""Multi-head latent attention (DeepSeek-AI 2024, "DeepSeek-V2", §2.1): keys and values are
up-projected per head from one compressed latent c_t = RMSNorm(W_DKV x_t) of width r (the
`kv_lora_rank`), and RoPE rides on a decoupled key k^R_t shared by the heads,

    q_t = W_UQ RMSNorm(W_DQ x_t)   (or W_Q x_t without a query rank)   = [q^C_t,h | RoPE(q^R_t,h)]
    k_t,h = [W_UK,h c_t | RoPE(k^R_t)],  v_t,h = W_UV,h c_t,  o_t = W_O [softmax(q k / √(d_C + d_R)) v]_h

so a token's decode state is c_t and k^R_t — r + d_R numbers instead of 2·H·d_h — the declared
`kv_latent` and `key_rope` caches. Decoding reads them without expanding keys: W_UK is absorbed
into the query (q^C W_UK c) and W_UV applied after the weighted sum of latents (the paper's
§2.1.2). Laid out and counted as transformers' `DeepseekV3Attention` (q_proj or q_a_proj /
q_a_layernorm / q_b_proj, kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj), DeepSeek's
interleaved RoPE pairs by default.
"""

from __future__ import annotations

from pydantic import Field, PositiveFloat, PositiveInt

from archc.ir.cost import MAX_LEN, Cost, CostCtx, StateTensor
from archc.ir.sharding import Parallel, Sharding, by_cuts, split_units
from archc.ir.types import TensorType
from archc.ir.weights import Weight, dense
from archc.ops.registry import (
    OpDef,
    Params,
    PruneAxis,
    ShapeError,
    mixes_causally,
    register,
    seq_len,
    width_of,
)


class MLAParams(Params):
    heads: PositiveInt = Field(description="query heads")
    kv_lora_rank: PositiveInt = Field(description="r: width of the compressed key/value latent (the cache per token)")
    q_lora_rank: PositiveInt | None = Field(None, description="width of the compressed query; none: one q_proj")
    qk_nope_head_dim: PositiveInt = Field(description="d_C: per-head query/key width without positions")
    qk_rope_head_dim: PositiveInt = Field(description="d_R: the decoupled rotary width (shared key)")
    v_head_dim: PositiveInt = Field(description="per-head value width")
    rope_theta: PositiveFloat = Field(10000.0, description="RoPE base of the decoupled part")
    rope_interleave: bool = Field(True, description="DeepSeek's interleaved rotary pairs (x0, x1), (x2, x3), …; "
                                  "false: rotate_half pairs (i, i + d_R/2)")
    bias: bool = Field(False, description="biases on q_a_proj, kv_a_proj_with_mqa and o_proj (attention_bias)")
    norm_eps: PositiveFloat = Field(1e-6, description="epsilon of the latents' RMSNorms")

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim


def _shape(p: MLAParams, ins: list[TensorType]) -> TensorType:
    if p.qk_rope_head_dim % 2:
        raise ShapeError(f"qk_rope_head_dim={p.qk_rope_head_dim} is odd; RoPE rotates pairs",
                         "use an even rotary width", arg="qk_rope_head_dim")
    return ins[0]


def _cost(p: MLAParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """Projections (2 FLOPs per weight): the query d→H·(d_C + d_R) (or through its rank), the
    latent d→r + d_R, kv_b r→H·(d_C + d_v), o H·d_v→d; attention 2·T_eff·H·(d_C + d_R + d_v) with
    T_eff = (T + 1)/2 (causal), keys and values expanded from the latents (the training form)."""
    d = width_of(ins)
    h, r = p.heads, p.kv_lora_rank
    q = d * h * p.qk_head_dim if p.q_lora_rank is None else p.q_lora_rank * (d + h * p.qk_head_dim)
    flops = 2 * (q + d * (r + p.qk_rope_head_dim) + r * h * (p.qk_nope_head_dim + p.v_head_dim) + h * p.v_head_dim * d)
    t_eff = (seq_len(ins[0], ctx) + 1) / 2
    flops += 2 * t_eff * h * (p.qk_head_dim + p.v_head_dim)
    act = d + h * (2 * p.qk_head_dim + 2 * p.v_head_dim) + r + p.qk_rope_head_dim
    return Cost(flops=flops, act_bytes=act * ctx.dtype_bytes)


def _weights(p: MLAParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """As DeepseekV3Attention: q_proj d→H·(d_C + d_R), or q_a_proj d→q_rank (bias with `bias`),
    q_a_layernorm [q_rank] and q_b_proj q_rank→H·(d_C + d_R); kv_a_proj_with_mqa d→r + d_R (bias
    with `bias`), kv_a_layernorm [r], kv_b_proj r→H·(d_C + d_v), o_proj H·d_v→d (scaled residual
    init; bias with `bias`). Heads cut the rows of the per-head up-projections and o_proj's
    columns; the latents' down-projections are shared."""
    d = width_of(ins)
    h, heads = p.heads, ("heads",)
    if p.q_lora_rank is None:
        query = dense("q_proj", d, h * p.qk_head_dim, "projection", cuts_out=heads)
    else:
        query = (*dense("q_a_proj", d, p.q_lora_rank, "projection", bias=p.bias),
                 Weight("q_a_layernorm.weight", (p.q_lora_rank,), "norm", "ones"),
                 *dense("q_b_proj", p.q_lora_rank, h * p.qk_head_dim, "projection", cuts_out=heads))
    return (query
            + dense("kv_a_proj_with_mqa", d, p.kv_lora_rank + p.qk_rope_head_dim, "projection", bias=p.bias)
            + (Weight("kv_a_layernorm.weight", (p.kv_lora_rank,), "norm", "ones"),)
            + dense("kv_b_proj", p.kv_lora_rank, h * (p.qk_nope_head_dim + p.v_head_dim), "projection", cuts_out=heads)
            + dense("o_proj", h * p.v_head_dim, d, "projection", bias=p.bias, init="residual", cuts_in=heads))


def _state(p: MLAParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """The compressed cache: `kv_latent` [max_len, r] (the normalized latents) and `key_rope`
    [max_len, d_R] (the rotated shared keys), in the model's dtype, one row per token."""
    return (StateTensor("kv_latent", (MAX_LEN, p.kv_lora_rank), "model", kv=True),
            StateTensor("key_rope", (MAX_LEN, p.qk_rope_head_dim), "model", kv=True))


def _prune(p: MLAParams, ins: list[TensorType]) -> tuple[PruneAxis, ...]:
    """Heads: head h's query rows (q_proj or q_b_proj), its key and value rows of kv_b_proj and
    o_proj's columns; the latent and its norms are shared. Zeroed, the head's values are 0, so it
    adds nothing: exact."""
    qk, kv, v = p.qk_head_dim, p.qk_nope_head_dim + p.v_head_dim, p.v_head_dim
    q_name = "q_proj.weight" if p.q_lora_rank is None else "q_b_proj.weight"

    def head(h: int) -> dict:
        rows = lambda w: list(range(h * w, (h + 1) * w))  # noqa: E731
        return {q_name: (0, rows(qk)), "kv_b_proj.weight": (0, rows(kv)), "o_proj.weight": (1, rows(v))}

    return (PruneAxis("heads", p.heads, head, lambda kept: {"heads": len(kept)},
                      lambda h: ("o_proj", list(range(h * v, (h + 1) * v)))),)


def _parallel(p: MLAParams, ins: list[TensorType]) -> Parallel:
    """By heads: the per-head up-projections by rows, o_proj by columns (partial sums
    all-reduced); the latents' down-projections, norms and the compressed cache are replicated —
    every rank needs the whole latent (DeepSeek's tensor-parallel MLA)."""
    ws = _weights(p, ins)

    def tensor(t: int) -> Sharding:
        split_units("heads", p.heads, t, "MLA")
        return Sharding("heads", p.heads, t, by_cuts(ws, "heads"))

    return Parallel(tensor=tensor, context="none",
                    why_context="a sequence split would need ring attention over the latents, not built for MLA")


register(OpDef(name="mla", params=MLAParams, shape=_shape, cost=_cost,
               summary="Multi-head latent attention (DeepSeek-V2/V3): keys and values from a compressed latent, "
               "decoupled RoPE; the latent is the KV cache.", default_name="attn", role="mixer",
               causal=mixes_causally, state=_state, weights=_weights, prune=_prune, parallel=_parallel,
               example={"heads": 4, "kv_lora_rank": 32, "q_lora_rank": 48, "qk_nope_head_dim": 16,
                        "qk_rope_head_dim": 8, "v_head_dim": 16}))

