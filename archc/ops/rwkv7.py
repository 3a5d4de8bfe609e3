"""RWKV-7 "Goose" (Peng et al. 2025, "RWKV-7 "Goose" with Expressive Dynamic State Evolution"):
the generalized delta rule with vector-valued gates. Per head, with the state S [K, V],

    S_t = (diag(w_t) + b_t a_tᵀ) S_{t−1} + k_t v_tᵀ,    o_t = S_tᵀ r_t
    a_t = −κ̂_t,  b_t = κ̂_t ⊙ α_t,  κ̂_t = normalize(k_t ⊙ k_k)  (the "in-context learning rate" α_t)

with a data-dependent decay per key channel, log w_t = −e^{−1/2} σ(w₀ + tanh(x_w W₁) W₂) (so w_t ∈
(e^{−e^{−1/2}}, 1)), the key k_t ⊙ (1 + (α_t − 1) ⊙ k_a), per-head GroupNorm of the read-out, the
bonus (r_t ⊙ k_t ⊙ r_k summed per head) · v_t and the output gate σ(x_g G₁) G₂. Laid out and counted as
flash-linear-attention's `RWKV7Attention` and `RWKV7FeedForward`; the channel mix has no receptance
gate (relu(key(x_k))² → value).

Departure: RWKV-7's value residual (every layer after the first lerps its v towards the first
layer's v, `v_first`) is a value handed between layers beside the hidden state; an op here makes
one value, so each layer is built as RWKV-7's first layer (no `v_lora`). docs/backends.md says so.
"""

from __future__ import annotations

from pydantic import Field, PositiveFloat, PositiveInt

from archc.ir.cost import Cost, CostCtx, StateTensor
from archc.ir.sharding import Parallel, Sharding, Split, by_cuts, split_units
from archc.ir.types import TensorType
from archc.ir.weights import Weight, dense
from archc.ops.registry import (
    OpDef,
    Params,
    PruneAxis,
    divides,
    hidden_to_hidden,
    mixes_causally,
    register,
    seq_len,
    width_of,
)


def _rank(d: int, scale: float, power: float) -> int:
    """flash-linear-attention's default low-rank width: max(32, round(scale·d^power / 32)·32)."""
    return max(32, int(round(scale * d ** power / 32) * 32))


class TimeMix7Params(Params):
    head_dim: PositiveInt = Field(64, description="width of each head (heads = hidden / head_dim)")
    hidden: PositiveInt | None = Field(None, description="key and value width H·head_dim; default d")
    decay_rank: PositiveInt | None = Field(None, description="rank of the decay's low-rank map (w_lora); "
                                           "default max(32, round(1.8·√d / 32)·32)")
    a_rank: PositiveInt | None = Field(None, description="rank of the in-context learning rate's map (a_lora); "
                                       "default max(32, round(1.8·√d / 32)·32)")
    gate_rank: PositiveInt | None = Field(None, description="rank of the output gate's map (g_lora); "
                                          "default max(32, round(0.6·d^0.8 / 32)·32)")
    norm_eps: PositiveFloat = Field(1e-5, description="GroupNorm epsilon per unit of head width (eps = head_dim·norm_eps)")
    chunk: PositiveInt = Field(16, description="chunk length of the parallel form (its pairwise decays are C×C×K)")

    def width(self, d: int) -> int:
        return self.hidden or d

    def heads(self, d: int) -> int:
        return self.width(d) // self.head_dim

    def ranks(self, d: int) -> tuple[int, int, int]:
        """(decay, a, gate) ranks."""
        return (self.decay_rank or _rank(d, 1.8, 0.5), self.a_rank or _rank(d, 1.8, 0.5),
                self.gate_rank or _rank(d, 0.6, 0.8))


def _tm_shape(p: TimeMix7Params, ins: list[TensorType]) -> TensorType:
    d = width_of(ins)
    divides(p.head_dim, p.width(d), "head_dim", "the width" if p.hidden is None else "`hidden`", arg="head_dim")
    return ins[0]


def _tm_cost(p: TimeMix7Params, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """r, k, v d→A, o A→d (A = H·K), the three low-rank maps d→r→A; the generalized delta rule
    per token 9·H·K² (aᵀS, the decay, b uᵀ and k vᵀ writes, the read-out), and the chunk's pairwise
    part 6·Q·H·K + 4·Q·H·K with Q = min(chunk, T)."""
    d, a = width_of(ins), p.width(width_of(ins))
    rw, ra, rg = p.ranks(d)
    q = min(p.chunk, seq_len(ins[0], ctx))
    k = p.head_dim
    flops = 2 * 4 * d * a + 2 * (rw + ra + rg) * (d + a) + 9 * a * k + 10 * q * a
    return Cost(flops=flops, act_bytes=(7 * d + 8 * a) * ctx.dtype_bytes)


def _tm_weights(p: TimeMix7Params, ins: list[TensorType]) -> tuple[Weight, ...]:
    """As flash-linear-attention's RWKV7Attention (without the value residual's v_lora): the
    token-shift ratios x_{r,w,k,v,a,g} [1, 1, d] (mix), k_k and k_a [A] and r_k [H, K] (own init),
    r_proj, k_proj, v_proj d→A, o_proj A→d (scaled residual init), the low-rank maps
    w_lora.lora.{0,2} d→r→A with a bias (decay class), a_lora likewise (with a bias), g_lora
    without a bias, and the per-head GroupNorm g_norm."""
    d = width_of(ins)
    a, h, k = p.width(d), p.heads(d), p.head_dim
    rw, ra, rg = p.ranks(d)
    heads = ("heads",)
    return (*(Weight(f"x_{n}", (1, 1, d), "mix", "own") for n in "rwkvag"),
            Weight("k_k", (a,), "mix", "own", (("heads", 0),)),
            Weight("k_a", (a,), "mix", "own", (("heads", 0),)),
            Weight("r_k", (h, k), "mix", "own", (("heads", 0),)),
            *(w for n in ("r_proj", "k_proj", "v_proj") for w in dense(n, d, a, "projection", cuts_out=heads)),
            *dense("o_proj", a, d, "projection", init="residual", cuts_in=heads),
            *dense("w_lora.lora.0", d, rw, "decay", init="own"),
            *dense("w_lora.lora.2", rw, a, "decay", bias=True, init="own", cuts_out=heads, bias_init="own"),
            *dense("a_lora.lora.0", d, ra, "mix", init="own"),
            *dense("a_lora.lora.2", ra, a, "mix", bias=True, init="own", cuts_out=heads),
            *dense("g_lora.lora.0", d, rg, "projection", init="own"),
            *dense("g_lora.lora.2", rg, a, "projection", init="own", cuts_out=heads),
            Weight("g_norm.weight", (a,), "norm", "own", (("heads", 0),)),
            Weight("g_norm.bias", (a,), "norm", "zeros", (("heads", 0),)))


def _tm_state(p: TimeMix7Params, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """The previous token `shift` [d] and the memory `recurrent` [H, K, V] (fp32)."""
    d = width_of(ins)
    return StateTensor("shift", (d,)), StateTensor("recurrent", (p.heads(d), p.head_dim, p.head_dim))


def _tm_prune(p: TimeMix7Params, ins: list[TensorType]) -> tuple[PruneAxis, ...]:
    """Heads: head h's rows of r, k, v and of the three low-rank maps' second layers (and their
    biases), its k_k, k_a, r_k and g_norm entries, and o_proj's columns. Zeroed, k = 0 so κ̂ = 0
    (a = b = 0) and the memory stays 0; its GroupNorm group is 0·w + 0, the bonus r·k = 0 and the
    gate 0: exact."""
    d = width_of(ins)
    k, ws = p.head_dim, _tm_weights(p, ins)
    cut = by_cuts(ws, "heads")

    def head(h: int) -> dict:
        c = list(range(h * k, (h + 1) * k))
        return {name: (s.axis, [h] if name == "r_k" else c) for name, s in cut.items()}

    return (PruneAxis("heads", p.heads(d), head, lambda kept: {"hidden": len(kept) * k},
                      lambda h: ("o_proj", list(range(h * k, (h + 1) * k)))),)


def _tm_parallel(p: TimeMix7Params, ins: list[TensorType]) -> Parallel:
    """By heads, as the prune rule cuts them; the memory with them; the token-shift ratios and the
    maps' first layers read x, which every rank holds, so they are replicated, as is the shift
    state. o_proj's partial sums are all-reduced. A split sequence scans from the handed-on
    memory and previous token."""
    d = width_of(ins)
    ws = _tm_weights(p, ins)

    def tensor(t: int) -> Sharding:
        split_units("heads", p.heads(d), t, "RWKV-7 time-mix")
        return Sharding("heads", p.heads(d), t, by_cuts(ws, "heads"), state={"recurrent": Split(0)})

    return Parallel(tensor=tensor, context="state")


register(OpDef(name="rwkv7_time_mix", params=TimeMix7Params, shape=_tm_shape, cost=_tm_cost,
               summary="RWKV-7 time-mix: the generalized delta rule with vector-valued decay and in-context "
               "learning rate; chunked form and recurrent step.", default_name="attn", role="mixer",
               causal=mixes_causally, state=_tm_state, weights=_tm_weights, prune=_tm_prune,
               parallel=_tm_parallel))


class ChannelMix7Params(Params):
    hidden: PositiveInt | None = Field(None, description="inner width of the squared-ReLU key projection; default 4·d "
                                       "(RWKV-7's)")

    def inner(self, d: int) -> int:
        return self.hidden or 4 * d


def _cm_cost(p: ChannelMix7Params, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """key d→hidden, value hidden→d: 2 FLOPs per weight."""
    d = width_of(ins)
    return Cost(flops=4 * d * p.inner(d), act_bytes=(2 * d + 2 * p.inner(d)) * ctx.dtype_bytes)


def _cm_weights(p: ChannelMix7Params, ins: list[TensorType]) -> tuple[Weight, ...]:
    """As flash-linear-attention's RWKV7FeedForward: the token-shift ratio x_k [d] (own), key
    d→hidden, value hidden→d (scaled residual init), no biases and no receptance."""
    d = width_of(ins)
    return (Weight("x_k", (d,), "mix", "own"), *dense("key", d, p.inner(d), "ffn", cuts_out=("ffn",)),
            *dense("value", p.inner(d), d, "ffn", init="residual", cuts_in=("ffn",)))


def _cm_state(p: ChannelMix7Params, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """The previous token [d] (fp32)."""
    return (StateTensor("shift", (width_of(ins),)),)


def _cm_prune(p: ChannelMix7Params, ins: list[TensorType]) -> tuple[PruneAxis, ...]:
    """Hidden units: key's row j and value's column j; relu(0)² · 0 = 0: exact."""
    return (PruneAxis("ffn", p.inner(width_of(ins)), lambda j: {"key.weight": (0, [j]), "value.weight": (1, [j])},
                      lambda kept: {"hidden": len(kept)}, lambda j: ("value", [j])),)


def _cm_parallel(p: ChannelMix7Params, ins: list[TensorType]) -> Parallel:
    """By hidden units: key rows, value columns (partial sums all-reduced). A split sequence needs
    the previous rank's last token (the shift)."""
    ws = _cm_weights(p, ins)

    def tensor(t: int) -> Sharding:
        split_units("hidden units", p.inner(width_of(ins)), t, "RWKV-7 channel-mix")
        return Sharding("ffn", p.inner(width_of(ins)), t, by_cuts(ws, "ffn"))

    return Parallel(tensor=tensor, context="state")


register(OpDef(name="rwkv7_channel_mix", params=ChannelMix7Params, shape=hidden_to_hidden, cost=_cm_cost,
               summary="RWKV-7 channel-mix: token shift and a squared-ReLU key, no receptance gate.",
               default_name="ffn", role="ffn", causal=mixes_causally, state=_cm_state,
               weights=_cm_weights, prune=_cm_prune, parallel=_cm_parallel))
