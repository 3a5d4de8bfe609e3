"""Gated linear attention (Yang, Wang, Shen, Panda & Kim 2024, "Gated Linear Attention Transformers
with Hardware-Efficient Training"): a matrix memory per head with a data-dependent decay per key
channel,

    S_t = diag(α_t) S_{t−1} + k_tᵀ v_t,    o_t = q_t S_t,    α_t = σ(x_t W_α1 W_α2 + b_α)^{1/τ}

with q scaled by 1/√K, the decay's low-rank projection (rank 16), τ = 16 (the paper's
normalizer), and the output gate RMSNorm(o) ⊙ silu(x W_g) per head. Counted and laid out as
flash-linear-attention's `GatedLinearAttention` layer (q_proj, k_proj, v_proj, g_proj, gk_proj.0,
gk_proj.1, g_norm_swish_gate, o_proj; key width d·expand_k, value width d·expand_v).
"""

from __future__ import annotations

from pydantic import Field, PositiveFloat, PositiveInt

from archc.ir.cost import Cost, CostCtx, StateTensor
from archc.ir.sharding import Parallel, Sharding, Split, split_units
from archc.ir.types import TensorType
from archc.ir.weights import Weight, dense
from archc.ops.registry import (
    OpDef,
    Params,
    PruneAxis,
    ShapeError,
    divides,
    mixes_causally,
    register,
    rows,
    seq_len,
    width_of,
)


class GLAParams(Params):
    heads: PositiveInt = Field(4, description="heads")
    expand_k: PositiveFloat = Field(0.5, description="key width as a multiple of the model width (d·expand_k)")
    expand_v: PositiveFloat = Field(1.0, description="value width as a multiple of the model width (d·expand_v)")
    gate_rank: PositiveInt = Field(16, description="rank of the decay's low-rank projection (gk_proj)")
    gate_normalizer: PositiveFloat = Field(16.0, description="τ: log α = log σ(·) / τ")
    chunk: PositiveInt = Field(16, description="chunk length of the parallel form (its pairwise decays are C×C×K)")
    norm_eps: PositiveFloat = Field(1e-5, description="epsilon of the gated output RMSNorm")

    def key_width(self, d: int) -> int:
        return round(d * self.expand_k)

    def value_width(self, d: int) -> int:
        return round(d * self.expand_v)

    def head_dims(self, d: int) -> tuple[int, int]:
        """(K, V) per head."""
        return self.key_width(d) // self.heads, self.value_width(d) // self.heads


def _shape(p: GLAParams, ins: list[TensorType]) -> TensorType:
    d = width_of(ins)
    for name, width in (("expand_k", p.key_width(d)), ("expand_v", p.value_width(d))):
        if width < 1 or abs(width - d * getattr(p, name)) > 1e-6 * d:
            raise ShapeError(f"{name}={getattr(p, name)} gives a width of {d * getattr(p, name)} from {d}, "
                             "not a whole number", "choose an expansion that makes an integer width", arg=name)
        divides(p.heads, width, "heads", f"the {name} width", arg="heads")
    return ins[0]


def _cost(p: GLAParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """q, k (d→K·H), v, g (d→V·H), gk_proj (d→r→K·H), o_proj (V·H→d); per token the recurrence
    costs 4·H·K·V (decay and write, read-out) and the chunk's pairwise part 3·Q·H·K + 2·Q·H·V
    with Q = min(chunk, T)."""
    d = width_of(ins)
    kw, vw = p.key_width(d), p.value_width(d)
    k, v = p.head_dims(d)
    q = min(p.chunk, seq_len(ins[0], ctx))
    flops = 2 * d * (2 * kw + 2 * vw) + 2 * (d * p.gate_rank + p.gate_rank * kw) + 2 * vw * d \
        + 4 * p.heads * k * v + q * p.heads * (3 * k + 2 * v)
    return Cost(flops=flops, act_bytes=(d + 3 * kw + 3 * vw) * ctx.dtype_bytes)


def _weights(p: GLAParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """As flash-linear-attention's GatedLinearAttention, no biases but the decay's: q_proj, k_proj
    d→K·H, v_proj, g_proj d→V·H, gk_proj.0 d→r and gk_proj.1 r→K·H with its bias (the decay's
    class), the gated head norm's weight [V] (ones), o_proj V·H→d (scaled residual init)."""
    d = width_of(ins)
    kw, vw = p.key_width(d), p.value_width(d)
    return (dense("q_proj", d, kw, "projection", cuts_out=("heads",))
            + dense("k_proj", d, kw, "projection", cuts_out=("heads",))
            + dense("v_proj", d, vw, "projection", cuts_out=("heads",))
            + dense("g_proj", d, vw, "projection", cuts_out=("heads",))
            + dense("gk_proj.0", d, p.gate_rank, "decay")
            + dense("gk_proj.1", p.gate_rank, kw, "decay", bias=True, cuts_out=("heads",))
            + (Weight("g_norm_swish_gate.weight", (p.head_dims(d)[1],), "norm", "ones"),)
            + dense("o_proj", vw, d, "projection", init="residual", cuts_in=("heads",)))


def _prune(p: GLAParams, ins: list[TensorType]) -> tuple[PruneAxis, ...]:
    """Heads: each head's rows of q, k, v, g and the decay's second projection (and its bias), and
    o_proj's columns; the low-rank first projection and the head norm's weight [V] are shared.
    Zeroed, q = k = v = 0, so the head's memory stays 0 and reads 0, and g = 0 gates it (silu(0)
    = 0): exact."""
    d = width_of(ins)
    k, v = p.head_dims(d)

    def head(h: int) -> dict:
        return {"q_proj.weight": (0, rows(h, k)), "k_proj.weight": (0, rows(h, k)), "v_proj.weight": (0, rows(h, v)),
                "g_proj.weight": (0, rows(h, v)), "gk_proj.1.weight": (0, rows(h, k)),
                "gk_proj.1.bias": (0, rows(h, k)), "o_proj.weight": (1, rows(h, v))}

    def params(kept: list[int]) -> dict:
        n = len(kept)
        return {"heads": n, "expand_k": n * k / d, "expand_v": n * v / d}

    return (PruneAxis("heads", p.heads, head, params, lambda h: ("o_proj", rows(h, v))),)


def _state(p: GLAParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """The memory `recurrent` [H, K, V], fp32."""
    k, v = p.head_dims(width_of(ins))
    return (StateTensor("recurrent", (p.heads, k, v)),)


def _parallel(p: GLAParams, ins: list[TensorType]) -> Parallel:
    """By heads: q, k, v, g and the decay's second projection by rows, o_proj by columns (its
    partial sums all-reduced), the memory with them; the low-rank first projection and the head
    norm's weight are replicated. A split sequence scans from the handed-on state."""

    def tensor(t: int) -> Sharding:
        split_units("heads", p.heads, t, "GLA")
        w = {name: Split(0) for name in ("q_proj.weight", "k_proj.weight", "v_proj.weight", "g_proj.weight",
                                         "gk_proj.1.weight", "gk_proj.1.bias")}
        w["o_proj.weight"] = Split(1)
        return Sharding("heads", p.heads, t, w, state={"recurrent": Split(0)})

    return Parallel(tensor=tensor, context="state")


register(OpDef(name="gla", params=GLAParams, shape=_shape, cost=_cost,
               summary="Gated linear attention: a matrix memory with a data-dependent decay per key channel, "
               "output gate; chunked form and recurrent step.", default_name="mixer", role="mixer",
               causal=mixes_causally, state=_state, weights=_weights, prune=_prune, parallel=_parallel))
