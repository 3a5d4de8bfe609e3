"""The associative memory of ARMT (Rodkin, Kuratov, Bulatov & Burtsev 2024, "Associative Recurrent
Memory Transformer"): a quasi-linear key–value matrix per layer, read by every token and written
once per segment with a delta rule, so information crosses segments at constant cost per token.

With φ = DPFP-ν (Schlag et al. 2021: ReLU(±x), products with ν rolled copies), the tokens of
segment s read the memory as it stood after segment s − 1,

    o_t = A_{s−1} φ(W_q x_t) / (z_{s−1} · φ(W_q x_t) + ε)

and the segment then writes it, each of its tokens i with k_i = φ(W_k x_i), v_i = W_v x_i and
β_i = σ(W_β x_i):

    v̄_i = A_{s−1} k_i / (z_{s−1} · k_i + ε),   γ_i = clip(1 − z_{s−1} · k_i / ‖k_i‖², 0, 1)
    A_s = A_{s−1} + Σ_i β_i (v_i − v̄_i) ⊗ k_i,   z_s = z_{s−1} + Σ_i γ_i k_i

(the paper's update rule; γ clipped and not differentiated, as its reference code; A and z
start at 0). Departure: in ARMT
the segment's *memory tokens* write (RMT's [mem; segment; mem] layout); this op lets every token
of the segment write, so it works in any block — wrap the block in `recurrent_memory` for ARMT's
memory tokens. The memory is the op's declared decode state, with the segment's pending write.
"""

from __future__ import annotations

from pydantic import Field, PositiveFloat, PositiveInt

from archc.ir.cost import Cost, CostCtx, StateTensor
from archc.ir.types import TensorType
from archc.ir.weights import Weight, dense
from archc.ops.registry import OpDef, Params, hidden_to_hidden, mixes_causally, register, width_of


class AssociativeParams(Params):
    segment: PositiveInt = Field(512, description="tokens per segment: read the memory before it, write it after")
    key_dim: PositiveInt | None = Field(None, description="width of W_q, W_k before φ (default d)")
    nu: PositiveInt = Field(3, description="DPFP's ν: φ has 2·key_dim·ν features")
    eps: PositiveFloat = Field(1e-5, description="ε of the normalizer")

    def keys(self, d: int) -> int:
        return self.key_dim or d

    def features(self, d: int) -> int:
        """φ's width: 2 · key_dim · ν."""
        return 2 * self.keys(d) * self.nu


def _cost(p: AssociativeParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """W_q, W_k d→key_dim, W_v d→d, W_β d→1; φ 2·F for F = 2·key_dim·ν features; the read 2·F·d
    + 2·F; the write (v̄, the update) 4·F·d + 4·F."""
    d = width_of(ins)
    f = p.features(d)
    return Cost(flops=2 * d * (2 * p.keys(d) + d + 1) + 4 * f + 6 * f * d + 6 * f,
                act_bytes=(3 * d + 2 * f) * ctx.dtype_bytes)


def _weights(p: AssociativeParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """As ARMT's AssociativeLayerWrapper: W_mq, W_mk d→key_dim and W_mv d→d without biases,
    W_mb d→1 with a bias (the write strength β)."""
    d = width_of(ins)
    return (*dense("W_mq", d, p.keys(d), "projection"), *dense("W_mk", d, p.keys(d), "projection"),
            *dense("W_mv", d, d, "projection"), *dense("W_mb", d, 1, "projection", bias=True))


def _state(p: AssociativeParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """`memory` A [F, d] and `norm` z [F] as of the last completed segment, and the current
    segment's pending write `memory_write` [F, d], `norm_write` [F] (fp32, zeros)."""
    d, f = width_of(ins), p.features(width_of(ins))
    return (StateTensor("memory", (f, d)), StateTensor("norm", (f,)),
            StateTensor("memory_write", (f, d)), StateTensor("norm_write", (f,)))


register(OpDef(name="associative_memory", params=AssociativeParams, shape=hidden_to_hidden, cost=_cost,
               summary="ARMT's associative memory: a DPFP key–value matrix read by every token and written per "
               "segment with the delta rule.", default_name="assoc", role="mixer", causal=mixes_causally,
               state=_state, weights=_weights))
