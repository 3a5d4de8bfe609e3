"""The Hyena operator (Poli et al. 2023, "Hyena Hierarchy: Towards Larger Convolutional Language
Models"): data-controlled gating interleaved with implicitly parametrized long convolutions,

    (x⁰, x¹, …, x^{N−1}, v) = ShortConv(in_proj(u))          (a depthwise causal conv of width 3)
    z¹ = v;  z^{n+1} = x^{N−n} ⊙ (h^n ∗ z^n + β^n ⊙ z^n)  for n = 1 … N−1;  y = out_proj(x⁰ ⊙ z^N)

where each long filter h^n [L, d] is a function of the lag, h(t) = window(t) ⊙ FFN(PE(t)): a small
MLP with sine activations over a positional encoding of t (t/L and `emb_dim − 1` complex
exponentials), times an exponential decay per channel. Computed by FFT convolution in
O(L log L); laid out and counted as the safari repository's `standalone_hyena.py`
(`HyenaOperator` with its `HyenaFilter`). The filter is defined up to `max_len` lags (its
positional encoding is built for that length), so `max_len` bounds the sequence.

Decoding keeps each long convolution's input history (the declared `history` state, one row per
token) and the short convolution's last inputs (`conv`): a step costs O(t) per token, as
attention's does, since the filter is as long as the context.
"""

from __future__ import annotations

import math

from pydantic import Field, PositiveFloat, PositiveInt

from archc.ir.cost import MAX_LEN, Cost, CostCtx, StateTensor
from archc.ir.sharding import Parallel, Sharding, Split, split_units
from archc.ir.types import TensorType
from archc.ir.weights import Weight, conv1d, dense
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


class HyenaParams(Params):
    max_len: PositiveInt = Field(description="L: the longest sequence (the implicit filters are built for L lags)")
    inner: PositiveInt | None = Field(None, description="width of the gated channels (in_proj d→(N+1)·inner, "
                                      "out_proj inner→d); default d")
    order: PositiveInt = Field(2, description="N: gates x⁰ … x^{N−1}; N − 1 long convolutions")
    filter_order: PositiveInt = Field(64, description="width of the implicit filter's MLP")
    emb_dim: PositiveInt = Field(3, description="positional features of a lag: t/L and (emb_dim − 1)/2 complex exponentials")
    inner_mlps: int = Field(2, ge=0, description="hidden layers of the filter MLP after its first")
    short_filter: PositiveInt = Field(3, description="width of the depthwise causal short convolution")
    sin_freq: PositiveFloat = Field(1.0, description="initial frequency of the filter MLP's sine activations")
    fast_decay_pct: PositiveFloat = Field(0.3, description="the fastest channel's window reaches `target` at this fraction of L")
    slow_decay_pct: PositiveFloat = Field(1.5, description="the slowest channel's window reaches `target` at this fraction of L")
    target: PositiveFloat = Field(1e-2, description="the window's value at the decay fractions")
    shift: float = Field(0.0, description="added to the decay window (0: pure exponential)")

    def width(self, d: int) -> int:
        return self.inner or d

    def decay_range(self) -> tuple[float, float]:
        """(min, max) decay rates of the window exp(−t·rate), t ∈ [0, 1]: safari's ExponentialModulation."""
        return math.log(1 / self.target) / self.slow_decay_pct, math.log(1 / self.target) / self.fast_decay_pct


def _shape(p: HyenaParams, ins: list[TensorType]) -> TensorType:
    if p.order < 2:
        raise ShapeError(f"order={p.order} has no long convolution", "use order ≥ 2 (Hyena-2 is the paper's)",
                         arg="order")
    if p.emb_dim < 3 or p.emb_dim % 2 == 0:
        raise ShapeError(f"emb_dim={p.emb_dim}: the encoding is t and pairs of cos/sin",
                         "use an odd emb_dim ≥ 3", arg="emb_dim")
    return ins[0]


def _cost(p: HyenaParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """in_proj d→(N+1)d, out_proj d→d, the short conv 2·k per channel, per long convolution an
    FFT product ~ 2·5·log₂(2T)·d + the gates; the filters' MLP runs once per call (L·(emb·f +
    f²·inner + f·(N−1)d)), not per token."""
    d, n = width_of(ins), p.order
    e, t = p.width(d), seq_len(ins[0], ctx)
    flops = 2 * d * (n + 1) * e + 2 * e * d + 2 * p.short_filter * (n + 1) * e \
        + (n - 1) * (10 * math.log2(max(2 * t, 2)) * e + 3 * e) + e
    return Cost(flops=flops, act_bytes=(d + 2 * (n + 1) * e + 4 * (n - 1) * e) * ctx.dtype_bytes)


def _weights(p: HyenaParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """As safari's HyenaOperator (E = `inner`, default d): in_proj d→(N+1)E and out_proj E→d with
    biases, the depthwise short_filter [(N+1)E, 1, k] with a bias; the HyenaFilter `filter_fn`:
    bias [(N−1)E] (the β), the positional encoding pos_emb.z [1, L, emb] (trained, as safari's
    with its small learning rate), implicit_filter.0 emb→f, then per layer a Sin with its
    frequencies [1, f] and a Linear f→f, a last Linear f→(N−1)E without a bias (PyTorch's default
    init: own), and the window's decay rates modulation.deltas [1, 1, (N−1)E] (fixed: safari's
    buffer, a parameter without gradient here so that tensor parallelism splits it with its
    channels)."""
    d, n, f = width_of(ins), p.order, p.filter_order
    e = p.width(d)
    mlp = [*dense("filter_fn.implicit_filter.0", p.emb_dim, f, "conv", bias=True, init="own", bias_init="own"),
           Weight("filter_fn.implicit_filter.1.freq", (1, f), "conv", "own")]
    for i in range(p.inner_mlps):
        mlp += [*dense(f"filter_fn.implicit_filter.{2 + 2 * i}", f, f, "conv", bias=True, init="own", bias_init="own"),
                Weight(f"filter_fn.implicit_filter.{3 + 2 * i}.freq", (1, f), "conv", "own")]
    mlp += dense(f"filter_fn.implicit_filter.{2 + 2 * p.inner_mlps}", f, (n - 1) * e, "conv", init="own",
                 cuts_out=("inner",))
    return (*dense("in_proj", d, (n + 1) * e, "projection", bias=True, cuts_out=("inner",)),
            *conv1d("short_filter", (n + 1) * e, p.short_filter, "conv", cuts=("inner",)),
            Weight("filter_fn.bias", ((n - 1) * e,), "conv", "own", (("inner", 0),)),
            Weight("filter_fn.pos_emb.z", (1, p.max_len, p.emb_dim), "conv", "own"),
            *mlp,
            Weight("filter_fn.modulation.deltas", (1, 1, (n - 1) * e), "conv", "own", (("inner", 2),)),
            *dense("out_proj", e, d, "projection", bias=True, init="residual", cuts_in=("inner",)))


def _channels(e: int, c: int, parts: int) -> list[int]:
    """Channel c's index in each of `parts` stacked E-wide groups."""
    return [g * e + c for g in range(parts)]


def _prune(p: HyenaParams, ins: list[TensorType]) -> tuple[PruneAxis, ...]:
    """Channels: channel c of every gate and of v (its in_proj rows, short-filter taps and bias),
    its long filters (the last MLP layer's rows, β) and out_proj's column. Zeroed, x⁰_c = 0, so the
    channel's output is 0: exact (the other channels never read it: every operation is per channel
    but the projections)."""
    e, n = p.width(width_of(ins)), p.order
    last = f"filter_fn.implicit_filter.{2 + 2 * p.inner_mlps}.weight"

    def channel(c: int) -> dict:
        every, longs = _channels(e, c, n + 1), _channels(e, c, n - 1)
        return {"in_proj.weight": (0, every), "in_proj.bias": (0, every), "short_filter.weight": (0, every),
                "short_filter.bias": (0, every), "filter_fn.bias": (0, longs), last: (0, longs),
                "filter_fn.modulation.deltas": (2, longs), "out_proj.weight": (1, [c])}

    return (PruneAxis("inner", e, channel, lambda kept: {"inner": len(kept)}, lambda c: ("out_proj", [c])),)


def _state(p: HyenaParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """`conv` [(N+1)E, k]: the short convolution's last inputs; `history` [N − 1, max_len, E]:
    each long convolution's inputs so far (fp32)."""
    e, n = p.width(width_of(ins)), p.order
    return (StateTensor("conv", ((n + 1) * e, p.short_filter)),
            StateTensor("history", (n - 1, MAX_LEN, e)))


def _parallel(p: HyenaParams, ins: list[TensorType]) -> Parallel:
    """By channels: every operation between the projections is per channel, so each rank holds a
    share of the channels of every gate (in_proj's rows of each (N+1) group, the short filter's
    taps, the long filters' rows of the MLP's last layer and β) and out_proj's columns (partial
    sums all-reduced); the filter MLP's hidden layers are replicated."""
    e, n = p.width(width_of(ins)), p.order
    last = f"filter_fn.implicit_filter.{2 + 2 * p.inner_mlps}.weight"

    def tensor(t: int) -> Sharding:
        split_units("channels", e, t, "Hyena")
        every, longs = Split(0, parts=(e,) * (n + 1)), Split(0, parts=(e,) * (n - 1))
        w = {"in_proj.weight": every, "in_proj.bias": every, "short_filter.weight": every,
             "short_filter.bias": every, "filter_fn.bias": longs, last: longs,
             "filter_fn.modulation.deltas": Split(2, parts=(e,) * (n - 1)), "out_proj.weight": Split(1)}
        return Sharding("inner", e, t, w, state={"conv": every, "history": Split(2)})

    return Parallel(tensor=tensor, context="none",
                    why_context="a long convolution over a split sequence needs every earlier rank's inputs")


register(OpDef(name="hyena", params=HyenaParams, shape=_shape, cost=_cost,
               summary="Hyena: data-controlled gates around implicitly parametrized long convolutions (FFT).",
               default_name="mixer", role="mixer", causal=mixes_causally, state=_state, weights=_weights,
               prune=_prune, parallel=_parallel, example={"max_len": 128}))
