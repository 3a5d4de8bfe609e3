"""Output heads: language modeling (tied or not), sequence classification, token classification."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archc.backends.torch.context import Context
from archc.backends.torch.init import Init
from archc.backends.torch.kernels.common import wide
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


@implements("crf_head")
class CRFHead(OpModule):
    """A linear-chain CRF (Lafferty, McCallum & Pereira 2001; the tagger of Lample et al. 2016):
    `classifier` Linear(d, C) gives each token's emission scores (the module's output, the model's
    logits), `transitions` [C, C] the score of tag i followed by tag j, `start_transitions` and
    `end_transitions` [C] those of the first and last tag — pytorch-crf's names and init. A tag
    sequence y over the labelled tokens t_1 < … < t_n scores

        s(y) = start[y_1] + Σ_i emit[t_i, y_i] + Σ_{i>1} trans[y_{i−1}, y_i] + end[y_n],

    the loss is −log p(y) = log Σ_y' e^{s(y')} − s(y) (the forward algorithm), decoding the argmax
    (Viterbi). Unlabelled tokens (label −100, or padding) are skipped: the chain joins the labelled
    ones on either side, so a word-piece tokenizer's continuation pieces or [CLS] cost nothing."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.classifier = self.make_linear("classifier")
        self.transitions = self.make_parameter("transitions")
        self.start_transitions = self.make_parameter("start_transitions")
        self.end_transitions = self.make_parameter("end_transitions")

    def init_weights(self, init: Init) -> None:
        init.default(self)
        for w in (self.transitions, self.start_transitions, self.end_transitions):
            init.uniform_(w, -0.1, 0.1)

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        return self.classifier(x)

    def nll(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """−log p(tags) per sequence [B]: emissions [B, T, C]; tags [B, T] (anything where `mask`
        [B, T] is False); 0 for a sequence without labelled tokens."""
        emissions = wide(emissions)
        trans, start, end = (wide(w) for w in (self.transitions, self.start_transitions, self.end_transitions))
        b = emissions.shape[0]
        rows = torch.arange(b, device=emissions.device)
        alpha = torch.zeros_like(emissions[:, 0])  # log Σ over the paths so far, per last tag
        score = torch.zeros(b, device=emissions.device)
        prev = torch.zeros(b, dtype=torch.long, device=emissions.device)
        started = torch.zeros(b, dtype=torch.bool, device=emissions.device)
        for t in range(emissions.shape[1]):
            e, on = emissions[:, t], mask[:, t]
            y = tags[:, t].clamp(min=0)
            first, cont = on & ~started, on & started
            alpha = torch.where(first[:, None], start + e,
                                torch.where(cont[:, None], torch.logsumexp(alpha[:, :, None] + trans, dim=1) + e, alpha))
            step = torch.where(first, start[y], trans[prev, y]) + e[rows, y]
            score = score + torch.where(on, step, torch.zeros_like(step))
            prev, started = torch.where(on, y, prev), started | on
        log_z = torch.logsumexp(alpha + end, dim=-1)
        return torch.where(started, log_z - score - end[prev], torch.zeros_like(score))

    def viterbi(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """The best tag sequence [B, T] (−100 where `mask` is False)."""
        emissions = wide(emissions)
        trans, start, end = (wide(w) for w in (self.transitions, self.start_transitions, self.end_transitions))
        b, t_len, c = emissions.shape
        identity = torch.arange(c, device=emissions.device).expand(b, c)
        best = torch.zeros_like(emissions[:, 0])
        started = torch.zeros(b, dtype=torch.bool, device=emissions.device)
        back = []
        for t in range(t_len):
            e, on = emissions[:, t], mask[:, t]
            first, cont = on & ~started, on & started
            cand = best[:, :, None] + trans  # [B, from, to]
            top, arg = cand.max(dim=1)
            best = torch.where(first[:, None], start + e, torch.where(cont[:, None], top + e, best))
            back.append(torch.where(cont[:, None], arg, identity))
            started = started | on
        tag = (best + end).argmax(-1)
        out = torch.full((b, t_len), -100, dtype=torch.long, device=emissions.device)
        for t in range(t_len - 1, -1, -1):
            out[:, t] = torch.where(mask[:, t], tag, out[:, t])
            tag = back[t].gather(1, tag[:, None])[:, 0]
        return out


@implements("ctc_head")
class CTCHead(OpModule):
    """`classifier` Linear(d, classes + 1) on every frame: the scores of CTC (Graves et al. 2006),
    output 0 the blank. The loss (`ArchModel.loss`) is PyTorch's `ctc_loss` over the log-softmax;
    `ArchModel.transcribe` decodes greedily (best path: each frame's argmax, repeats merged, blanks
    dropped)."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.classifier = self.make_linear("classifier")

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        return self.classifier(x)
