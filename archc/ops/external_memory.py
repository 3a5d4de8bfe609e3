"""External memories a block can call: the Neural Turing Machine's (Graves, Wayne & Danihelka 2014)
and the Differentiable Neural Computer's (Graves et al. 2016). The block's input at each token is
the controller's output; a linear `interface` map turns it into the heads' parameters, the heads
read and write an N × M memory matrix, and `o_proj` maps the read vectors back to the model width
(the block adds them to its residual stream). The memory and the heads' previous weightings are
the op's declared decode state, so `step` carries them and `forward` is the same recurrence over
the whole sequence (a loop over the tokens: the update is nonlinear in the state).

NTM heads (§3.3): content addressing softmax(β·cos(k, M_i)), interpolation with the previous
weighting by g, a circular shift by s over offsets −r … r, sharpening w^γ / Σ w^γ; reads
r = wᵀM, writes M ← M ⊙ (1 − w eᵀ) + w aᵀ (erase then add; several write heads erase first).
DNC (Methods, "Memory addressing"): content addressing, usage u with free gates, allocation by
sorted usage, the write weighting gated between allocation and content, the temporal link matrix
L with precedence p, and per read head a mix of backward (Lᵀw), content and forward (Lw) reads.
"""

from __future__ import annotations

from pydantic import Field, PositiveInt

from archc.ir.cost import Cost, CostCtx, StateTensor
from archc.ir.types import TensorType
from archc.ir.weights import Weight, dense
from archc.ops.registry import OpDef, Params, ShapeError, hidden_to_hidden, mixes_causally, register, width_of


class NTMParams(Params):
    slots: PositiveInt = Field(128, description="N: memory locations")
    width: PositiveInt = Field(20, description="M: the width of each location")
    read_heads: PositiveInt = Field(1, description="read heads")
    write_heads: PositiveInt = Field(1, description="write heads")
    shift_range: int = Field(1, ge=0, description="r: a head shifts its focus by −r … r locations (2r + 1 ≤ N)")

    def read_interface(self) -> int:
        """A read head's parameters: key [M], β, g, shift [2r + 1], γ."""
        return self.width + 3 + 2 * self.shift_range + 1

    def write_interface(self) -> int:
        """A write head's: a read head's, then erase [M] and add [M]."""
        return self.read_interface() + 2 * self.width

    def interface_width(self) -> int:
        return self.read_heads * self.read_interface() + self.write_heads * self.write_interface()


def _ntm_cost(p: NTMParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """interface d→I, o_proj R·M→d; per head cosine similarities 3·N·M, the shift 2·N·(2r + 1)
    and sharpening ~4·N; a read N·M, a write 4·N·M."""
    d, n, m = width_of(ins), p.slots, p.width
    heads = p.read_heads + p.write_heads
    flops = 2 * d * p.interface_width() + 2 * p.read_heads * m * d \
        + heads * (3 * n * m + 2 * n * (2 * p.shift_range + 1) + 10 * n) + 2 * p.read_heads * n * m \
        + 4 * p.write_heads * n * m
    return Cost(flops=flops, act_bytes=(2 * d + p.interface_width() + heads * n) * ctx.dtype_bytes)


def _ntm_weights(p: NTMParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """`interface` d→I with a bias (I: each read head's key, β, g, shift, γ, then each write
    head's and its erase and add vectors), `o_proj` R·M→d (scaled residual init)."""
    d = width_of(ins)
    return (*dense("interface", d, p.interface_width(), "projection", bias=True),
            *dense("o_proj", p.read_heads * p.width, d, "projection", init="residual"))


def _ntm_state(p: NTMParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """`memory` [N, M] (filled with 1e-6, as pytorch-ntm's constant initial memory: a zero memory
    has no cosine direction), the heads' previous weightings `read_weights` [R, N] and
    `write_weights` [W, N] (zeros). All fp32."""
    return (StateTensor("memory", (p.slots, p.width), fill=1e-6),
            StateTensor("read_weights", (p.read_heads, p.slots)),
            StateTensor("write_weights", (p.write_heads, p.slots)))


def _ntm_shape(p: NTMParams, ins: list[TensorType]) -> TensorType:
    if 2 * p.shift_range + 1 > p.slots:
        raise ShapeError(f"shift_range={p.shift_range} shifts past {p.slots} locations",
                         "use 2·shift_range + 1 ≤ slots", arg="shift_range")
    return hidden_to_hidden(p, ins)


register(OpDef(name="ntm_memory", params=NTMParams, shape=_ntm_shape, cost=_ntm_cost,
               summary="Neural Turing Machine memory: content and location addressing (interpolate, shift, sharpen), "
               "erase/add writes; the memory is decode state.", default_name="memory", role="mixer",
               causal=mixes_causally, state=_ntm_state, weights=_ntm_weights))


class DNCParams(Params):
    slots: PositiveInt = Field(64, description="N: memory locations")
    width: PositiveInt = Field(16, description="W: the width of each location")
    read_heads: PositiveInt = Field(2, description="R: read heads (one write head, as the paper's)")

    def interface_width(self) -> int:
        """R read keys and strengths, the write key and strength, erase and write vectors, R free
        gates, the allocation and write gates, 3 read modes per read head: W(R + 3) + 5R + 3."""
        return self.width * (self.read_heads + 3) + 5 * self.read_heads + 3


def _dnc_cost(p: DNCParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """interface d→I, o_proj R·W→d; content addressing 3·N·W per key (R + 1), the allocation's
    sort ~N·log₂N, the link update 4·N², forward and backward reads 4·R·N², reads 2·R·N·W,
    the write 4·N·W."""
    d, n, w, r = width_of(ins), p.slots, p.width, p.read_heads
    flops = 2 * d * p.interface_width() + 2 * r * w * d + (r + 1) * 3 * n * w + n * max(n.bit_length(), 1) \
        + 4 * n * n + 4 * r * n * n + 2 * r * n * w + 4 * n * w
    return Cost(flops=flops, act_bytes=(2 * d + p.interface_width() + (r + 3) * n) * ctx.dtype_bytes)


def _dnc_weights(p: DNCParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """`interface` d→I with a bias, `o_proj` R·W→d (scaled residual init)."""
    d = width_of(ins)
    return (*dense("interface", d, p.interface_width(), "projection", bias=True),
            *dense("o_proj", p.read_heads * p.width, d, "projection", init="residual"))


def _dnc_state(p: DNCParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """`memory` [N, W], `usage` [N], `precedence` [N], `link` [N, N], the previous weightings
    `read_weights` [R, N] and `write_weights` [N]; zeros, fp32 (DeepMind's initial state)."""
    n = p.slots
    return (StateTensor("memory", (n, p.width)), StateTensor("usage", (n,)), StateTensor("precedence", (n,)),
            StateTensor("link", (n, n)), StateTensor("read_weights", (p.read_heads, n)),
            StateTensor("write_weights", (n,)))


register(OpDef(name="dnc_memory", params=DNCParams, shape=hidden_to_hidden, cost=_dnc_cost,
               summary="Differentiable Neural Computer memory: content, usage-based allocation and temporal-link "
               "reads; the memory, usage and links are decode state.", default_name="memory", role="mixer",
               causal=mixes_causally, state=_dnc_state, weights=_dnc_weights))
