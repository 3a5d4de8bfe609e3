"""Memory-augmented layers: the Compressive Transformer's attention over memories (Rae et al., 2020)
and recurrent memory tokens carried across segments (RMT, Bulatov et al., 2022)."""

from __future__ import annotations

from pydantic import Field, NonNegativeFloat, PositiveInt

from archc.ir.cost import Cost, CostCtx, StateTensor
from archc.ir.types import TensorType
from archc.ir.weights import Weight, conv1d, dense
from archc.ops.registry import (
    Heads,
    OpDef,
    Params,
    divides,
    hidden_to_hidden,
    mixes_causally,
    register,
    replicated_because,
    seq_len,
    width_of,
)


class CompressiveParams(Params, Heads):
    heads: PositiveInt
    mem_len: PositiveInt = Field(512, description="recent activations kept uncompressed")
    cmem_len: PositiveInt = Field(512, description="compressed memory slots")
    ratio: PositiveInt = Field(4, description="compression rate c: c old memories -> one slot (conv, stride c)")
    reconstruction: NonNegativeFloat = Field(
        1.0, description="weight of the attention-reconstruction loss that trains the compression (0: off)")


def compressive_buffers(p: CompressiveParams) -> tuple[int, int]:
    """Sizes of the decoding ring buffers: raw positions (the window holds up to mem_len + ratio − 1
    past tokens) and compressed slots (cmem_len visible, plus those complete or in progress but not
    yet evicted from the raw window)."""
    return p.mem_len + p.ratio, p.cmem_len + p.mem_len // p.ratio + 3


def _cm_shape(p: CompressiveParams, ins: list[TensorType]) -> TensorType:
    divides(p.heads, width_of(ins), "heads", "the width", arg="heads")
    return ins[0]


def _cm_cost(p: CompressiveParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """q, k, v, o 8d² FLOPs, the compression 2d² per token; each query attends at most
    mem_len + ratio raw and cmem_len compressed keys."""
    d = width_of(ins)
    t = seq_len(ins[0], ctx)
    t_eff = min((t + 1) / 2, p.mem_len + p.ratio / 2) + p.cmem_len
    return Cost(flops=8 * d * d + 4 * t_eff * d + 2 * d * d, act_bytes=5 * d * ctx.dtype_bytes)


def _cm_weights(p: CompressiveParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """q, k, v, o d→d without biases (o: scaled residual init), and the compression `compress`,
    a Conv1d d→d with kernel = stride = ratio (N(0, 0.02), zero bias)."""
    d = width_of(ins)
    return (tuple(w for n in "qkv" for w in dense(f"{n}_proj", d, d, "projection"))
            + dense("o_proj", d, d, "projection", init="residual")
            + conv1d("compress", d, p.ratio, "memory", groups=1, init="normal"))


def _cm_state(p: CompressiveParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """Keys and values of the raw window and of the compressed slots (ring buffers,
    `compressive_buffers`) and the inputs of the slot being filled [ratio, d]; model dtype."""
    d = width_of(ins)
    raw, slots = compressive_buffers(p)
    hd = p.head_dim_for(d)
    return (StateTensor("key", (p.heads, raw, hd), "model", kv=True),
            StateTensor("value", (p.heads, raw, hd), "model", kv=True),
            StateTensor("pending", (p.ratio, d), "model"),
            StateTensor("compressed_key", (p.heads, slots, hd), "model", kv=True),
            StateTensor("compressed_value", (p.heads, slots, hd), "model", kv=True))


register(OpDef(name="compressive_memory", params=CompressiveParams, shape=_cm_shape, cost=_cm_cost,
               summary="Compressive Transformer attention over [compressed memory, memory, input].",
               default_name="attn", role="mixer", causal=mixes_causally, state=_cm_state,
               weights=_cm_weights,
               parallel=replicated_because("its memory compression convolves the whole width; not split", why_context="its FIFO memories are evicted and compressed in sequence order")))


class RMTParams(Params):
    memory: PositiveInt = Field(16, description="memory tokens read at the start of each segment and written at its end")
    segment: PositiveInt = Field(512, description="segment length; the body sees segment + 2·memory tokens")


def _rmt_cost(p: RMTParams, ins: list[TensorType], out: TensorType, ctx: CostCtx, body: Cost) -> Cost:
    """The body's parameters; the body runs on segment + 2·memory tokens per segment, so its
    compute per token scales by (segment + 2·memory) / segment."""
    scale = (p.segment + 2 * p.memory) / p.segment
    return body.scale_compute(scale)


def _rmt_state(p: RMTParams, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    """The memory tokens [memory, d] carried to the next segment, starting from the learned
    `memory` (model dtype)."""
    return (StateTensor("memory", (p.memory, width_of(ins)), "model", fill="memory"),)


def _rmt_body_state(p: RMTParams, body: tuple[StateTensor, ...]) -> tuple[StateTensor, ...]:
    """The body's state sized for one segment with its memory tokens (segment + 2·memory)."""
    n = p.segment + 2 * p.memory
    return tuple(s.bound(n).renamed(f"body.{s.name}") for s in body)


register(OpDef(name="recurrent_memory", params=RMTParams, shape=hidden_to_hidden, cost=_rmt_cost,
               summary="Recurrent memory transformer: segments processed in order, memory tokens carried between them.", takes_block=True, default_name="rmt", role="wrapper", causal=mixes_causally,
               state=_rmt_state, body_state=_rmt_body_state,
               weights=lambda p, ins: (Weight("memory", (p.memory, width_of(ins)), "memory"),),
               parallel=replicated_because("a wrapper: its body runs whole on every rank", why_context="segments depend on each other through a nonlinear body")))
