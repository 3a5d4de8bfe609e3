"""Synthetic training tasks generated in-process (no downloads), as used to probe sequence mixers.

Each task yields `(input_ids, labels)` batches of token ids, with `labels = -100` everywhere except
the positions the model is scored on; labels sit at the position of the token to be predicted (the
model shifts them, as transformers' causal LMs). Token ids: 0 = blank/noise, 1 = separator,
2 = query marker, data tokens from 3 up to the task's vocabulary.

* `copy`: random tokens, a separator, the same tokens again (scored on the copy).
* `selective_copy`: data tokens scattered among blanks, then the data tokens in order (Gu & Dao,
  Mamba §4.1.1) — needs content-aware selection, not a fixed shift.
* `mqar`: multi-query associative recall (Arora et al., Zoology): key–value pairs, then keys
  again (with their values, in another order, among blanks when `pairs` < seq/4); scored on the
  recalled values.
* `induction`: a random sequence repeated once; scored on the second half, which an induction head
  solves by copying what followed the previous occurrence (Olsson et al.).
* `induction_heads`: the Mamba paper's form (Gu & Dao 2023, §4.1.2; Table 2): random data tokens
  with one special token (the query marker) somewhere, the token after it the answer; the sequence
  ends with the marker and then the answer, scored on that last token only — a single associative
  recall at any distance, so a model trained at one length can be tested at others.
* `facts`: open-book question answering over a corpus drawn fresh for every sequence — facts
  (entity, relation, value), a question (entity, relation, marker) scored on the value. With
  `passages` = k > 0 the k facts a BM25 retriever (`rag.BM25Retriever`) ranks highest for the
  question come first in the context (retrieval in context, as RAG pipelines put passages before
  the question); with 0 the question stands alone (closed book: the value cannot be known, so
  accuracy is chance — the measure of what retrieval adds).
* `chars`: character-level language modeling on the Python standard library's own source files,
  a corpus every machine with Python has (byte tokens, vocab 256).
"""

from __future__ import annotations

import sysconfig
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

IGNORE = -100
BLANK, SEP, QUERY, FIRST = 0, 1, 2, 3


@dataclass
class Task(ABC):
    name: str
    vocab: int  # token ids the task uses (must not exceed the model's vocabulary)

    @abstractmethod
    def batch(self, batch: int, seq: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """`(input_ids, labels)`, each [batch, seq]."""

    def _data(self, shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
        return torch.randint(FIRST, self.vocab, shape, generator=gen)


class Copy(Task):
    def batch(self, batch: int, seq: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        n = (seq - 1) // 2
        x = self._data((batch, n), gen)
        ids = torch.cat((x, torch.full((batch, 1), SEP), x), 1)
        labels = torch.full_like(ids, IGNORE)
        labels[:, n + 1:] = x
        return _fit(ids, labels, seq)


class SelectiveCopy(Task):
    def batch(self, batch: int, seq: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        n = max(1, seq // 8)
        span = seq - n - 1
        data = self._data((batch, n), gen)
        ids = torch.full((batch, seq), BLANK)
        # n distinct positions among the first `span`, kept in order
        pos = torch.rand(batch, span, generator=gen).argsort(1)[:, :n].sort(1).values
        ids.scatter_(1, pos, data)
        ids[:, span] = SEP
        ids[:, span + 1:] = data
        labels = torch.full_like(ids, IGNORE)
        labels[:, span + 1:] = data
        return ids, labels


@dataclass
class MQAR(Task):
    """Zoology's layout: `pairs` key–value pairs up front, then the rest of the sequence in
    two-token slots, `pairs` of them (at random) holding a key again and its value, the others
    blank. Default: seq // 4 pairs, which fills every slot (the dense form)."""

    pairs: int | None = None

    def batch(self, batch: int, seq: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        pairs = self.pairs or max(1, seq // 4)
        half = (self.vocab - FIRST) // 2
        slots = (seq - 2 * pairs) // 2
        if pairs > half or pairs > slots:
            raise ValueError(f"mqar with {pairs} pairs needs {4 * pairs} tokens per sequence and a vocabulary "
                             f"of at least {FIRST + 2 * pairs} (has {seq} and {self.vocab})")
        # distinct keys per row from the lower half of the data ids, values from the upper half
        keys = torch.rand(batch, half, generator=gen).argsort(1)[:, :pairs] + FIRST
        vals = torch.randint(FIRST + half, self.vocab, (batch, pairs), generator=gen)
        ctx = torch.stack((keys, vals), 2).flatten(1)  # k1 v1 k2 v2 ...
        order = torch.rand(batch, pairs, generator=gen).argsort(1)
        where = torch.rand(batch, slots, generator=gen).argsort(1)[:, :pairs]  # the queries' slots
        rows = torch.arange(batch)[:, None]
        query = torch.full((batch, slots, 2), BLANK)
        query[rows, where, 0], query[rows, where, 1] = keys.gather(1, order), vals.gather(1, order)
        scored = torch.full((batch, slots, 2), IGNORE)
        scored[rows, where, 1] = query[rows, where, 1]  # k v again, in another order: scored on v
        ids = torch.cat((ctx, query.flatten(1)), 1)
        labels = torch.cat((torch.full_like(ctx, IGNORE), scored.flatten(1)), 1)
        return _fit(ids, labels, seq)


class Induction(Task):
    def batch(self, batch: int, seq: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        n = seq // 2
        x = self._data((batch, n), gen)
        ids = torch.cat((x, x), 1)
        labels = torch.full_like(ids, IGNORE)
        labels[:, n + 1:] = x[:, 1:]  # the first repeated token is not predictable
        return _fit(ids, labels, seq)


class InductionHeads(Task):
    def batch(self, batch: int, seq: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        if seq < 4:
            raise ValueError("induction_heads needs at least 4 tokens: the marker, its answer, the marker again, "
                             "the answer")
        ids = self._data((batch, seq), gen)
        at = torch.randint(0, seq - 3, (batch,), generator=gen)       # the first marker, before the end's
        rows = torch.arange(batch)
        answer = ids[rows, at + 1]
        ids[rows, at] = QUERY
        ids[:, -2] = QUERY
        ids[:, -1] = answer
        labels = torch.full_like(ids, IGNORE)
        labels[:, -1] = answer
        return ids, labels


@dataclass
class Facts(Task):
    passages: int = 2
    facts: int = 16

    def batch(self, batch: int, seq: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        from archc.backends.torch.rag import BM25Retriever

        data = self.vocab - FIRST
        entities, relations = max(2, data // 3), max(2, data // 8)
        values = data - entities - relations
        if values < 2:
            raise ValueError(f"the facts task needs a vocabulary of at least {FIRST + 7} tokens")
        need = (self.passages * 4) + 4
        if seq < need:
            raise ValueError(f"facts with {self.passages} passages needs {need} tokens per sequence")
        rows_ids, rows_labels = [], []
        for _ in range(batch):
            pairs = torch.randperm(entities * relations, generator=gen)[:self.facts]
            ent, rel = FIRST + pairs // relations, FIRST + entities + pairs % relations
            val = FIRST + entities + relations + torch.randint(0, values, (self.facts,), generator=gen)
            corpus = torch.stack((ent, rel, val), 1)                        # [facts, 3]
            asked = int(torch.randint(0, self.facts, (1,), generator=gen))
            question = torch.tensor([int(ent[asked]), int(rel[asked]), QUERY])
            context: list[Tensor] = []
            if self.passages:
                got = BM25Retriever(corpus.tolist(), self.vocab)(question[None, :2], self.passages)
                context = [torch.cat((p, torch.tensor([SEP]))) for p in got.ids[0]]
            ids = torch.cat((*context, question, val[asked:asked + 1]))
            labels = torch.full_like(ids, IGNORE)
            labels[-1] = val[asked]
            rows_ids.append(ids)
            rows_labels.append(labels)
        return _fit(torch.stack(rows_ids), torch.stack(rows_labels), seq)


class Chars(Task):
    def __init__(self, name: str, vocab: int) -> None:
        super().__init__(name, 256)
        root = Path(sysconfig.get_paths()["stdlib"])
        files = sorted(root.glob("*.py"))
        text = b"".join(f.read_bytes() for f in files)
        self.data = torch.frombuffer(bytearray(text), dtype=torch.uint8).long()
        self.source = f"{len(files)} files of {root} ({len(text) / 1e6:.1f} MB)"

    def batch(self, batch: int, seq: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        start = torch.randint(0, len(self.data) - seq, (batch,), generator=gen)
        ids = torch.stack([self.data[s:s + seq] for s in start.tolist()])
        return ids, ids.clone()


def _fit(ids: Tensor, labels: Tensor, seq: int) -> tuple[Tensor, Tensor]:
    """Pad (blank, unscored) or cut to exactly `seq` tokens."""
    if ids.shape[1] < seq:
        pad = seq - ids.shape[1]
        ids = torch.cat((ids, torch.full((ids.shape[0], pad), BLANK)), 1)
        labels = torch.cat((labels, torch.full((labels.shape[0], pad), IGNORE)), 1)
    return ids[:, :seq], labels[:, :seq]


TASKS: dict[str, type[Task]] = {"copy": Copy, "selective_copy": SelectiveCopy, "mqar": MQAR,
                                "induction": Induction, "induction_heads": InductionHeads, "facts": Facts,
                                "chars": Chars}


def make_task(name: str, model_vocab: int, task_vocab: int = 64, passages: int | None = None,
              pairs: int | None = None, seq: int | None = None) -> Task:
    """A task by name, its vocabulary capped by the model's (chars needs a vocabulary ≥ 256);
    `passages`: the facts task's retrieved passages per question (0: closed book); `pairs`: MQAR's
    key–value pairs per sequence (default a quarter of its tokens). With `seq`, one sequence of that
    length is drawn first, so a task that does not fit it is a ValueError here, not mid-training."""
    task = _task(name, model_vocab, task_vocab, passages, pairs)
    if seq is not None:
        task.batch(1, seq, torch.Generator().manual_seed(0))
    return task


def _task(name: str, model_vocab: int, task_vocab: int, passages: int | None, pairs: int | None) -> Task:
    if passages is not None and name != "facts":
        raise ValueError("passages are the facts task's retrieved facts")
    if pairs is not None and name != "mqar":
        raise ValueError("pairs are the mqar task's key-value pairs")
    if name == "mqar":
        return MQAR(name, min(task_vocab, model_vocab), pairs)
    if name == "facts":
        return Facts(name, min(task_vocab, model_vocab), 2 if passages is None else passages)
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    if name == "chars":
        if model_vocab < 256:
            raise ValueError(f"the chars task needs a vocabulary of at least 256 bytes, the model has {model_vocab}")
        return Chars(name, 256)
    return TASKS[name](name, min(task_vocab, model_vocab))


def token_sequences(source: str, count: int, seq: int, vocab: int, seed: int = 0) -> Tensor:
    """`count` sequences [count, seq] of token ids: drawn from the task generator named `source`,
    or windows of the bytes of the text file at path `source` (byte-level: the vocabulary must
    hold 256). Calibration of static quantization, activation/Taylor importance for pruning and
    the held-out text of `archc compress-report` all come from here. ValueError on bad input."""
    if source in TASKS:
        ids, _ = make_task(source, vocab).batch(count, seq, torch.Generator().manual_seed(seed))
        return ids
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"{source!r} is neither a task ({', '.join(TASKS)}) nor a file")
    if vocab < 256:
        raise ValueError(f"{path} is read as bytes, and the model's vocabulary ({vocab}) holds fewer than 256")
    data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8).long()
    if len(data) < seq + 1:
        raise ValueError(f"{path} holds {len(data)} bytes, fewer than one sequence of {seq}")
    starts = torch.randint(0, len(data) - seq, (count,), generator=torch.Generator().manual_seed(seed))
    return torch.stack([data[s:s + seq] for s in starts.tolist()])
