"""Output heads: language modeling, sequence classification (pooled), token classification."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from archc.ir.cost import Cost, CostCtx
from archc.ir.types import TensorType, hidden
from archc.ops.registry import OpDef, Params, linear, register, seq_len, width_of


class LMHeadParams(Params):
    vocab: PositiveInt | None = Field(None, description="output vocabulary; defaults to the embedding's")
    tied: bool = Field(False, description="reuse the token embedding matrix (no parameters of its own)")
    bias: bool = False


def _lm_shape(p: LMHeadParams, ins: list[TensorType]) -> TensorType:
    width_of(ins)
    assert p.vocab is not None, "lowering fills in vocab"
    return hidden(ins[0].shape[0], ins[0].shape[1], p.vocab)


def _lm_cost(p: LMHeadParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """params = vocab·d unless tied (+ vocab bias); FLOPs = 2·d·vocab (counted when tied too)."""
    d = width_of(ins)
    n, f = linear(d, out.width, p.bias)
    if p.tied:
        n -= d * out.width
    return Cost(params=n, flops=f, act_bytes=(d + out.width) * ctx.dtype_bytes)


def _lm_ties(p: LMHeadParams) -> dict[str, tuple[str, str]]:
    return {"weight": ("embed", "weight")} if p.tied else {}


register(OpDef("lm_head", LMHeadParams, _lm_shape, _lm_cost,
               "Language-modeling head: logits over the vocabulary, optionally tied to the embedding.", "head",
               default_name="lm_head", role="head", loss=lambda p: "lm", ties=_lm_ties))


class ClsHeadParams(Params):
    classes: PositiveInt = Field(description="number of labels")
    pool: Literal["cls", "mean", "last"] = Field("cls", description="how tokens are pooled into one vector")
    pooler: bool = Field(False, description="dense + tanh before the classifier (BERT's pooler)")


def _cls_shape(p: ClsHeadParams, ins: list[TensorType]) -> TensorType:
    width_of(ins)
    return TensorType(shape=(ins[0].shape[0], p.classes))


def _cls_cost(p: ClsHeadParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """params = (d·d + d if pooler) + d·classes + classes; run once per sequence (FLOPs spread over T)."""
    d = width_of(ins)
    pool = linear(d, d, True) if p.pooler else (0, 0)
    cls = linear(d, p.classes, True)
    return Cost(params=pool[0] + cls[0], flops=(pool[1] + cls[1]) / seq_len(ins[0], ctx))


register(OpDef("cls_head", ClsHeadParams, _cls_shape, _cls_cost,
               "Sequence classification: pool (cls / mean / last), optional pooler, linear classifier.",
               "head", default_name="classifier", role="head",
               loss=lambda p: "regression" if p.classes == 1 else "classification"))


class TokenClsParams(Params):
    classes: PositiveInt = Field(description="number of labels per token")


def _tok_shape(p: TokenClsParams, ins: list[TensorType]) -> TensorType:
    width_of(ins)
    return hidden(ins[0].shape[0], ins[0].shape[1], p.classes)


def _tok_cost(p: TokenClsParams, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """params = d·classes + classes; FLOPs = 2·d·classes per token."""
    n, f = linear(width_of(ins), p.classes, True)
    return Cost(params=n, flops=f, act_bytes=width_of(ins) * ctx.dtype_bytes)


register(OpDef("token_cls_head", TokenClsParams, _tok_shape, _tok_cost,
               "Token classification (tagging): a linear classifier on every token.", "head",
               default_name="classifier", role="head", loss=lambda p: "token_classification"))
