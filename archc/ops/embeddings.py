"""Embeddings: token ids to vectors, and absolute position encodings added to them."""

from __future__ import annotations

from pydantic import Field, NonNegativeInt, PositiveInt

from archc.ir.cost import Cost, CostCtx
from archc.ir.sharding import Parallel, Sharding, Split, split_units
from archc.ir.types import TensorType, hidden
from archc.ir.weights import Weight
from archc.ops.registry import OpDef, Params, ShapeError, hidden_to_hidden, register, same_shape, width_of


class EmbedParams(Params):
    vocab: PositiveInt = Field(description="number of token ids")
    d: PositiveInt = Field(description="embedding width")
    token_types: NonNegativeInt = Field(0, description="segment (token type) embeddings added, as in BERT")
    scale: bool = Field(False, description="multiply by sqrt(d), as in T5/Gemma")


def _embed_shape(p: EmbedParams, ins: list[TensorType]) -> TensorType:
    t = ins[0]
    if t.dtype != "int" or len(t.shape) != 2:
        raise ShapeError(f"embed takes token ids int[batch, seq], got {t}",
                         "pass a model input (e.g. `tokens`) to embed", code="ARC0302")
    return hidden(t.shape[0], t.shape[1], p.d)


def _embed_cost(p: EmbedParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """A table lookup costs no FLOPs; saves the looked-up rows."""
    return Cost(act_bytes=p.d * ctx.dtype_bytes)


def _embed_weights(p: EmbedParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """The table `weight` [vocab, d] and, with token types, `token_type.weight` [types, d] (BERT's
    segment embeddings), both N(0, 0.02)."""
    types = (Weight("token_type.weight", (p.token_types, p.d), "embedding"),) if p.token_types else ()
    return (Weight("weight", (p.vocab, p.d), "embedding"), *types)


def _embed_parallel(p: EmbedParams, ins: list[TensorType]) -> Parallel:
    """Vocabulary-parallel (Megatron's VocabParallelEmbedding): rank r holds rows [r·V/t, (r+1)·V/t)
    of the table, looks up the tokens that fall in them (zeros for the rest) and the ranks' rows
    are summed; the token-type table is replicated (added on one rank). A vocabulary that does not
    split evenly is refused (pad it: Megatron pads to a multiple of 128·t)."""
    def tensor(t: int) -> Sharding:
        split_units("vocabulary rows", p.vocab, t, "the embedding")
        return Sharding("vocab", p.vocab, t, {"weight": Split(0)})

    return Parallel(tensor=tensor, context="pointwise")


register(OpDef(name="embed", params=EmbedParams, shape=_embed_shape, cost=_embed_cost,
               summary="Token embedding table: int[B, T] -> float[B, T, d].",
               inputs=("tokens",), int_inputs=(0,), default_name="embed", role="embedding",
               weights=_embed_weights, parallel=_embed_parallel))


class LearnedPosParams(Params):
    max_len: PositiveInt = Field(description="longest sequence with a learned position vector")
    offset: NonNegativeInt = Field(0, description="index of the first position (OPT uses 2)")


def _learned_pos_cost(p: LearnedPosParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """One add per element."""
    return Cost(flops=width_of(ins))


register(OpDef(name="learned_pos", params=LearnedPosParams, shape=hidden_to_hidden, cost=_learned_pos_cost,
               summary="Learned absolute position embeddings added to x (GPT-2, BERT).",
               default_name="pos_embed", role="embedding",
               weights=lambda p, ins: (Weight("weight", (p.max_len + p.offset, width_of(ins)), "position"),)))


class SinusoidalParams(Params):
    base: float = Field(10000.0, gt=1, description="wavelength base of the sinusoids (Vaswani et al.)")


def _sinusoidal_cost(p: SinusoidalParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """No parameters: the table is a fixed function of position; one add per element."""
    if width_of(ins) % 2:
        raise ShapeError("sinusoidal positions need an even width")
    return Cost(flops=width_of(ins))


def _sinusoidal_shape(p: SinusoidalParams, ins: list[TensorType]) -> TensorType:
    if width_of(ins) % 2:
        raise ShapeError(f"sinusoidal positions need an even width, got {ins[0].width}", code="ARC0303")
    return same_shape(p, ins)


register(OpDef(name="sinusoidal_pos", params=SinusoidalParams, shape=_sinusoidal_shape, cost=_sinusoidal_cost,
               summary="Fixed sinusoidal position encodings added to x (Vaswani et al., 2017).",
               default_name="pos_embed", role="embedding"))
