"""Output heads: language modeling, sequence classification (pooled), token classification."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt

from archc.ir.cost import Cost, CostCtx
from archc.ir.sharding import Parallel, Reduction, Sharding, Split, split_units
from archc.ir.types import TensorType, hidden
from archc.ir.weights import Weight, dense
from archc.ops.registry import OpDef, Params, register, seq_len, width_of


class LMHeadParams(Params):
    vocab: PositiveInt | None = Field(None, description="output vocabulary; defaults to the embedding's")
    tied: bool = Field(False, description="reuse the token embedding matrix (no parameters of its own)")
    bias: bool = False
    softcap: PositiveFloat | None = Field(None, description="logits → softcap·tanh(logits / softcap) (Gemma 2's "
                                                            "final logit soft-capping)")


def _lm_shape(p: LMHeadParams, ins: list[TensorType]) -> TensorType:
    width_of(ins)
    assert p.vocab is not None, "lowering fills in vocab"
    return hidden(ins[0].shape[0], ins[0].shape[1], p.vocab)


def _lm_cost(p: LMHeadParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """FLOPs = 2·d·vocab (counted when tied too)."""
    d = width_of(ins)
    return Cost(flops=2 * d * out.width, act_bytes=(d + out.width) * ctx.dtype_bytes)


def _lm_weights(p: LMHeadParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """`weight` [vocab, d] unless tied (it reads the embedding's table), `bias` [vocab] (zeros)."""
    assert p.vocab is not None, "lowering fills in vocab"
    own = () if p.tied else (Weight("weight", (p.vocab, width_of(ins)), "head"),)
    return own + ((Weight("bias", (p.vocab,), "head", "zeros"),) if p.bias else ())


def _lm_ties(p: LMHeadParams) -> dict[str, tuple[str, str]]:
    return {"weight": ("embed", "weight")} if p.tied else {}


def _lm_parallel(p: LMHeadParams, ins: list[TensorType]) -> Parallel:
    """Vocabulary-parallel: rank r computes the logits of its rows of the table (the embedding's,
    when tied: the same split) and bias, and they stay split — the cross-entropy is computed in
    parallel (Megatron's vocab-parallel cross-entropy: each token's max, Σexp and target logit
    all-reduced, 3 values a token), never gathering [tokens, V] logits. Sampling gathers them."""
    assert p.vocab is not None
    vocab = p.vocab

    def tensor(t: int) -> Sharding:
        split_units("vocabulary rows", vocab, t, "the LM head")
        w = {"weight": Split(0)} if not p.tied else {}
        if p.bias:
            w["bias"] = Split(0)
        return Sharding("vocab", vocab, t, w, output="vocab",
                        reductions=(Reduction("the parallel cross-entropy's max, Σexp and target logit", 3),))

    return Parallel(tensor=tensor, context="pointwise")


register(OpDef(name="lm_head", params=LMHeadParams, shape=_lm_shape, cost=_lm_cost,
               summary="Language-modeling head: logits over the vocabulary, optionally tied to the embedding.",
               default_name="lm_head", role="head", loss=lambda p: "lm", ties=_lm_ties,
               weights=_lm_weights, parallel=_lm_parallel))


class ClsHeadParams(Params):
    classes: PositiveInt = Field(description="number of labels")
    pool: Literal["cls", "mean", "last"] = Field("cls", description="how tokens are pooled into one vector")
    pooler: bool = Field(False, description="dense + tanh before the classifier (BERT's pooler)")


def _cls_shape(p: ClsHeadParams, ins: list[TensorType]) -> TensorType:
    width_of(ins)
    return TensorType(shape=(ins[0].shape[0], p.classes))


def _cls_cost(p: ClsHeadParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """Run once per sequence (FLOPs spread over T): the pooler 2·d·d, the classifier 2·d·classes."""
    d = width_of(ins)
    return Cost(flops=(2 * d * d * p.pooler + 2 * d * p.classes) / seq_len(ins[0], ctx))


def _cls_weights(p: ClsHeadParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """`pooler` Linear(d, d) (BERT's), then `classifier` Linear(d, classes), both with biases."""
    d = width_of(ins)
    pool = dense("pooler", d, d, "head", bias=True) if p.pooler else ()
    return pool + dense("classifier", d, p.classes, "head", bias=True)


register(OpDef(name="cls_head", params=ClsHeadParams, shape=_cls_shape, cost=_cls_cost,
               summary="Sequence classification: pool (cls / mean / last), optional pooler, linear classifier.", default_name="classifier", role="head",
               loss=lambda p: "regression" if p.classes == 1 else "classification",
               weights=_cls_weights))


class TokenClsParams(Params):
    classes: PositiveInt = Field(description="number of labels per token")


def _tok_shape(p: TokenClsParams, ins: list[TensorType]) -> TensorType:
    width_of(ins)
    return hidden(ins[0].shape[0], ins[0].shape[1], p.classes)


def _tok_cost(p: TokenClsParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """FLOPs = 2·d·classes per token."""
    return Cost(flops=2 * width_of(ins) * p.classes, act_bytes=width_of(ins) * ctx.dtype_bytes)


register(OpDef(name="token_cls_head", params=TokenClsParams, shape=_tok_shape, cost=_tok_cost,
               summary="Token classification (tagging): a linear classifier on every token.",
               default_name="classifier", role="head", loss=lambda p: "token_classification",
               weights=lambda p, ins: dense("classifier", width_of(ins), p.classes, "head", bias=True)))


class CRFHeadParams(Params):
    classes: PositiveInt = Field(description="number of tags")


def _crf_cost(p: CRFHeadParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """Emissions 2·d·C per token; the forward algorithm (the loss) or Viterbi (decoding) 3·C² per
    token."""
    return Cost(flops=2 * width_of(ins) * p.classes + 3 * p.classes ** 2, act_bytes=width_of(ins) * ctx.dtype_bytes)


def _crf_weights(p: CRFHeadParams, ins: list[TensorType]) -> tuple[Weight, ...]:
    """The emissions' `classifier` Linear(d, C) and, as pytorch-crf names them, `transitions` [C, C]
    (from tag i to tag j), `start_transitions` and `end_transitions` [C] (own init: U(−0.1, 0.1))."""
    c = p.classes
    own = (Weight("transitions", (c, c), "head", "own"), Weight("start_transitions", (c,), "head", "own"),
           Weight("end_transitions", (c,), "head", "own"))
    return (*dense("classifier", width_of(ins), c, "head", bias=True), *own)


register(OpDef(name="crf_head", params=CRFHeadParams, shape=_tok_shape, cost=_crf_cost,
               summary="Linear-chain CRF tagging (Lafferty et al. 2001): emissions per token and tag transitions; "
               "the forward algorithm's negative log-likelihood as loss, Viterbi decoding (`tag`).",
               default_name="crf", role="head", loss=lambda p: "crf", weights=_crf_weights))


class CTCHeadParams(Params):
    classes: PositiveInt = Field(description="output symbols, not counting CTC's blank (output index 0)")


def _ctc_shape(p: CTCHeadParams, ins: list[TensorType]) -> TensorType:
    width_of(ins)
    return hidden(ins[0].shape[0], ins[0].shape[1], p.classes + 1)


def _ctc_cost(p: CTCHeadParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """FLOPs = 2·d·(classes + 1) per frame (the loss's dynamic program is the loss function's)."""
    return Cost(flops=2 * width_of(ins) * (p.classes + 1), act_bytes=width_of(ins) * ctx.dtype_bytes)


register(OpDef(name="ctc_head", params=CTCHeadParams, shape=_ctc_shape, cost=_ctc_cost,
               summary="CTC (Graves et al. 2006): per-frame scores over the symbols and a blank (index 0); the loss "
               "sums over every alignment of the shorter label sequence, greedy decoding (`transcribe`).",
               default_name="ctc", role="head", loss=lambda p: "ctc",
               weights=lambda p, ins: dense("classifier", width_of(ins), p.classes + 1, "head", bias=True)))
