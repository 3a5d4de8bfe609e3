"""Training on and evaluating a user's text: a packed token stream (`archc.data.corpus`) as random
windows for training, and scored in order for the held-out loss, perplexity and bits per byte.

Windows are of `seq` tokens with `labels = input_ids` (the model shifts them, as transformers'
causal LMs); they cross document boundaries, which the end-of-document token marks (GPT-2's
packing). Evaluation scores every token once: consecutive windows overlap by one token, and the
stream starts with an end-of-document token so that the first document's first token is predicted
too, as every later document's is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from archc.backends.torch.model import ArchModel
from archc.backends.torch.tasks import Task


class TextTask(Task):
    """Random windows of a token stream (the training part of a corpus). The stream stays as
    the corpus holds it (uint32, memory-mapped from the cache): only each batch becomes int64."""

    def __init__(self, name: str, vocab: int, tokens: np.ndarray, source: str) -> None:
        super().__init__(name, vocab)
        self.tokens = tokens
        self.source = source

    def batch(self, batch: int, seq: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        if len(self.tokens) < seq:
            raise ValueError(f"the training text holds {len(self.tokens):,} tokens, fewer than one sequence of {seq}")
        starts = torch.randint(0, len(self.tokens) - seq + 1, (batch,), generator=gen)
        ids = torch.from_numpy(np.stack([self.tokens[s:s + seq] for s in starts.tolist()]).astype(np.int64))
        return ids, ids.clone()


@dataclass
class EvalResult:
    tokens: int  # tokens scored
    nll: float  # their summed negative log-likelihood, in nats
    bytes: float  # UTF-8 bytes of the text they cover (0 when not known)

    @property
    def loss(self) -> float:
        """Mean nats per token."""
        return self.nll / max(1, self.tokens)

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))

    @property
    def bits_per_byte(self) -> float | None:
        """Bits per UTF-8 byte of the text: comparable across tokenizers (the Pile's metric)."""
        return self.nll / math.log(2) / self.bytes if self.bytes else None


def windows(tokens: np.ndarray, eos_id: int, seq: int, max_tokens: int | None = None) -> Tensor:
    """[W, seq] windows over `eos + tokens` (cut to `max_tokens` scored tokens), consecutive ones
    overlapping by one token so that each token after the first is scored once; the last window
    is padded with -1 (not scored)."""
    stream = np.concatenate((np.array([eos_id], np.int64), np.asarray(tokens[:max_tokens], np.int64)))
    stride = seq - 1
    n = max(1, math.ceil((len(stream) - 1) / stride))
    out = np.full((n, seq), -1, np.int64)
    for i in range(n):
        piece = stream[i * stride:i * stride + seq]
        out[i, :len(piece)] = piece
    return torch.from_numpy(out)


@torch.no_grad()
def evaluate(model: ArchModel, tokens: np.ndarray, eos_id: int, seq: int, batch: int = 8,
             max_tokens: int | None = None, text_bytes: float = 0.0) -> EvalResult:
    """The summed loss of `model` on every token of `tokens` (at most `max_tokens`), in windows of
    `seq`, `batch` windows at a time; `text_bytes` is the UTF-8 size of the text they cover."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    w = windows(tokens, eos_id, seq, max_tokens)
    nll, scored = 0.0, 0
    for i in range(0, len(w), batch):
        chunk = w[i:i + batch].to(device)
        ids = chunk.clamp(min=0)  # padding: any id, never scored
        logits = model(ids).logits[:, :-1].float()
        target = chunk[:, 1:]
        keep = target >= 0
        nll += float(torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum"))
        scored += int(keep.sum())
    model.train(was_training)
    return EvalResult(scored, nll, text_bytes)
