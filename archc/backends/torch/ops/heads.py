"""Output heads: language modeling (tied or not), sequence classification, token classification."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archc.backends.torch.context import Context
from archc.backends.torch.module import OpModule
from archc.backends.torch.registry import implements


@implements("lm_head")
class LMHead(OpModule):
    """logits = x·Wᵀ (+ b). Untied: `weight` [vocab, d], N(0, 0.02). Tied: the token embedding's
    weight is used and no parameter is registered here (so it is counted and saved once)."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.weight = None if p.tied else self.make_parameter("weight")
        self.bias = self.make_parameter("bias") if p.bias else None
        self._tied: list[nn.Module] = []
        self._tied_param = "weight"

    def tie(self, param: str, owner: nn.Module, owner_param: str) -> None:
        """Read `param` from `owner`'s `owner_param` (the IR's tie; only `weight` is tied)."""
        assert param == "weight", param
        # a list, so the embedding is not registered twice as a submodule
        self._tied, self._tied_param = [owner], owner_param

    def head_weight(self) -> Tensor:
        """The [vocab, d] matrix: its own, or the embedding's it is tied to."""
        return self.weight if self.weight is not None else getattr(self._tied[0], self._tied_param)

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        logits = F.linear(x, self.head_weight(), self.bias)
        cap = self.params.softcap
        return logits if cap is None else torch.tanh(logits / cap) * cap


def pool(x: Tensor, how: str, mask: Tensor | None) -> Tensor:
    """[B, T, d] -> [B, d]: the first token (`cls`), the mean over real tokens, or the last real
    token (`last`, the convention of decoder classifiers such as LlamaForSequenceClassification)."""
    if how == "cls":
        return x[:, 0]
    if mask is None:
        return x.mean(1) if how == "mean" else x[:, -1]
    m = mask.to(x.dtype)
    if how == "mean":
        return (x * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1)
    last = (mask.long().cumsum(1).argmax(1))  # index of the last real token
    return x[torch.arange(x.shape[0], device=x.device), last]


@implements("cls_head")
class ClsHead(OpModule):
    """pool → (`pooler`: Linear(d, d) + tanh, as BERT) → `classifier` Linear(d, classes)."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.pooler = self.make_linear("pooler") if p.pooler else None
        self.classifier = self.make_linear("classifier")

    def forward(self, x: Tensor, ctx: Context) -> Tensor:
        h = pool(x, self.params.pool, ctx.attention_mask)
        if self.pooler is not None:
            h = torch.tanh(self.pooler(h))
        return self.classifier(h)


@implements("token_cls_head")
class TokenClsHead(OpModule):
    """`classifier` Linear(d, classes) on every token."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.classifier = self.make_linear("classifier")

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        return self.classifier(x)
