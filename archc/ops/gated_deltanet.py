"""Gated DeltaNet (Yang, Kautz & Hatamizadeh 2024, "Gated Delta Networks: Improving Mamba2 with
Delta Rule"): a matrix memory per head written by the gated delta rule,

    S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ,    o_t = S_tᵀ q_t,

with short causal convolutions on q, k, v, L2-normalized q and k, α_t = exp(−e^{A}·softplus(a_t +
dt_bias)) (Mamba-2's decay), β_t = σ(b_t), and an output gate: RMSNorm(o) ⊙ silu(z) per head.
Counted and laid out as transformers' `Qwen3NextGatedDeltaNet` (in_proj_qkvz, in_proj_ba, conv1d
without bias, dt_bias, A_log, norm, out_proj), whose key heads may serve several value heads.
"""

from __future__ import annotations

from pydantic import Field, PositiveFloat, PositiveInt

from archc.ir.cost import Cost, CostCtx, StateTensor
from archc.ir.sharding import Parallel, Sharding, Split, split_units
from archc.ir.types import TensorType
from archc.ir.weights import Weight, conv1d, dense
from archc.ops.registry import (
    OpDef,
    Params,
    PruneAxis,
    divides,
    mixes_causally,
    register,
    rows,
    seq_len,
    width_of,
)


class GatedDeltaNetParams(Params):
    heads: PositiveInt = Field(description="query/key heads")
    head_dim: PositiveInt = Field(description="width K of each query/key head")
    v_heads: PositiveInt | None = Field(None, description="value heads (a multiple of heads); default: heads")
    v_head_dim: PositiveInt | None = Field(None, description="width V of each value head; default: head_dim")
    d_conv: PositiveInt = Field(4, description="width of the short causal convolution on q, k, v")
    chunk: PositiveInt = Field(64, description="chunk length of the WY form (training, prefill)")
    norm_eps: PositiveFloat = Field(1e-6, description="epsilon of the gated output RMSNorm")

    @property
    def value_heads(self) -> int:
        return self.v_heads or self.heads

    @property
    def value_dim(self) -> int:
        """V per value head."""
        return self.v_head_dim or self.head_dim

    @property
    def key_width(self) -> int:
        """heads·K, the width of q and of k."""
        return self.heads * self.head_dim

    @property
    def value_width(self) -> int:
        """v_heads·V, the width of v, z and the output before out_proj."""
        return self.value_heads * self.value_dim

    @property
    def conv_width(self) -> int:
        """Channels through the convolution: q, k and v."""
        return 2 * self.key_width + self.value_width


def _shape(p: GatedDeltaNetParams, ins: list[TensorType]) -> TensorType:
    width_of(ins)
    divides(p.heads, p.value_heads, "heads", "v_heads", arg="v_heads",
            hint="each query/key head serves an equal group of value heads")
    return ins[0]


def _cost(p: GatedDeltaNetParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """in_proj_qkvz d→2·H·K + 2·Hv·V, in_proj_ba d→2·Hv, conv1d over 2·H·K + Hv·V channels
    (k taps), out_proj Hv·V→d. Per token the recurrence costs 8·Hv·K·V (decay, read-back, delta write, read-out) and the chunk's quadratic
    part 2·Q·Hv·(K + V) with Q = min(chunk, T)."""
    d = width_of(ins)
    hv, k, v = p.value_heads, p.head_dim, p.value_dim
    proj = 2 * p.key_width + 2 * p.value_width + 2 * hv
    q = min(p.chunk, seq_len(ins[0], ctx))
    flops = 2 * d * proj + 2 * p.conv_width * p.d_conv + 8 * hv * k * v + 2 * q * hv * (k + v) \
        + 2 * p.value_width * d
    return Cost(flops=flops, act_bytes=(d + proj + p.conv_width + 2 * p.value_width) * ctx.dtype_bytes)


def _weights(p: GatedDeltaNetParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """As transformers' Qwen3NextGatedDeltaNet, no biases: in_proj_qkvz d→2·H·K + 2·Hv·V,
    in_proj_ba d→2·Hv (β's and α's inputs), the depthwise conv1d (no bias, PyTorch's default
    init), dt_bias and A_log per value head (own init: log-uniform Δ, log U(0.01, 16)), the
    gated head norm's `norm.weight` [V] (ones), out_proj Hv·V→d (scaled residual init)."""
    d, hv = width_of(ins), p.value_heads
    heads = (("heads", 0),)
    return (dense("in_proj_qkvz", d, 2 * p.key_width + 2 * p.value_width, "projection", cuts_out=("heads",))
            + dense("in_proj_ba", d, 2 * hv, "decay", cuts_out=("heads",))
            + conv1d("conv1d", p.conv_width, p.d_conv, "conv", bias=False, cuts=("heads",))
            + (Weight("dt_bias", (hv,), "discretization", "own", heads), Weight("A_log", (hv,), "ssm", "own", heads),
               Weight("norm.weight", (p.value_dim,), "norm", "ones"))
            + dense("out_proj", p.value_width, d, "projection", init="residual", cuts_in=("heads",)))


def _prune(p: GatedDeltaNetParams, ins: list[TensorType]) -> tuple[PruneAxis, ...]:
    """Query/key heads, each with its group of g = v_heads/heads value heads: the head's block of
    in_proj_qkvz ([q K | k K | v g·V | z g·V], laid out per key head) and of in_proj_ba ([b g |
    a g]), its q, k and v channels of the conv, its value heads' dt_bias and A_log, and out_proj's
    columns of its value heads; the head norm's weight [V] is shared. Zeroed, q = k = v = 0 after
    the conv and silu, so the head's memory stays 0 and reads 0, and z = 0 gates it (silu(0) = 0):
    exact."""
    k, v, g = p.head_dim, p.value_dim, p.value_heads // p.heads
    block = 2 * k + 2 * g * v

    def head(h: int) -> dict:
        conv = rows(h, k) + [p.key_width + i for i in rows(h, k)] + [2 * p.key_width + i for i in rows(h, g * v)]
        return {"in_proj_qkvz.weight": (0, rows(h, block)), "in_proj_ba.weight": (0, rows(h, 2 * g)),
                "conv1d.weight": (0, conv), "dt_bias": (0, rows(h, g)), "A_log": (0, rows(h, g)),
                "out_proj.weight": (1, rows(h, g * v))}

    return (PruneAxis("heads", p.heads, head,
                      lambda kept: {"heads": len(kept), "v_heads": len(kept) * g, "v_head_dim": v},
                      lambda h: ("out_proj", rows(h, g * v))),)


def _state(p: GatedDeltaNetParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """conv [2·H·K + Hv·V, d_conv] (the last d_conv inputs of the convolution) and the memory
    recurrent [Hv, K, V], fp32: Qwen3-Next's `conv_state` and `recurrent_state`."""
    return (StateTensor("conv", (p.conv_width, p.d_conv)),
            StateTensor("recurrent", (p.value_heads, p.head_dim, p.value_dim)))


def _parallel(p: GatedDeltaNetParams, ins: list[TensorType]) -> Parallel:
    """By query/key heads, each with its group of value heads (Qwen3-Next's in_proj_qkvz and
    in_proj_ba are laid out per key head, so a rank's rows are one contiguous block), the conv's
    q, k and v channels, dt_bias and A_log per value head, out_proj's columns, and the conv and
    recurrent state with them; the head norm's weight [V] is shared by every head and replicated.
    out_proj's partial sums are all-reduced. A split sequence scans from the handed-on state."""
    block = Split(0)
    conv = Split(0, (p.key_width, p.key_width, p.value_width))

    def tensor(t: int) -> Sharding:
        split_units("heads", p.heads, t, "Gated DeltaNet")
        w = {"in_proj_qkvz.weight": block, "in_proj_ba.weight": block, "conv1d.weight": conv, "dt_bias": block,
             "A_log": block, "out_proj.weight": Split(1)}
        return Sharding("heads", p.heads, t, w, state={"conv": conv, "recurrent": block})

    return Parallel(tensor=tensor, context="state")


register(OpDef(name="gated_deltanet", params=GatedDeltaNetParams, shape=_shape, cost=_cost,
               summary="Gated DeltaNet: gated delta rule memory, short convs, output gate; chunked WY form and "
               "recurrent step.", default_name="mixer", role="mixer", causal=mixes_causally,
               state=_state, weights=_weights, prune=_prune, parallel=_parallel))
