"""Retrieval-augmented encoder–decoders: a retriever a user fills, and the two ways the literature
conditions generation on what it returns.

* **Retrievers** return, for each query, k passages of a local corpus with their scores
  (`Retrieved`): `BM25Retriever` (Robertson & Zaragoza's BM25 over token ids, the lexical
  baseline), `DenseRetriever` (inner product of normalized embeddings in a faiss index; built
  with the spec's own encoder by `DenseRetriever.from_encoder`, mean-pooled), and
  `CallableRetriever`, which wraps any function of (queries, k).
* **FiD** (Izacard & Grave 2021, Fusion-in-Decoder): each (question, passage) pair is encoded on
  its own, the encoder outputs are concatenated along the sequence, and the decoder cross-attends
  to all of them at once — `FusionInDecoder`, with `generate` (greedy, sampling, beam search) over
  the fused encoder outputs.
* **RAG** (Lewis et al. 2020): each pair is encoded *and decoded* on its own and the passages are
  marginalized with the retriever's distribution p(z|x) = softmax(scores): per sequence
  (RAG-Sequence, p(y|x) = Σ_z p(z|x) Π_t p(y_t|x, z, y_<t)) or per token (RAG-Token,
  p(y_t|·) = Σ_z p(z|x) p(y_t|x, z, y_<t)) — `RAG`, with RAG-Token's greedy decoding.

The generator is any two-input spec whose decoder is causal (`seq2seq.EncoderDecoder`); the
retriever's scores are inputs (not trained through), as FiD's and RAG's fixed-index setting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from archc.backends.torch.model import ArchModel
from archc.backends.torch.module import State
from archc.backends.torch.seq2seq import EncoderDecoder

IGNORE_INDEX = -100


@dataclass
class Retrieved:
    """k passages per query: token ids [B, k, L] (padded), their mask [B, k, L] and scores [B, k]."""

    ids: Tensor
    mask: Tensor
    scores: Tensor


def pad_corpus(passages: Sequence[Sequence[int]], pad: int = 0) -> tuple[Tensor, Tensor]:
    """A corpus of token-id passages as ids [N, L] (right-padded with `pad`) and mask [N, L]."""
    width = max(1, max(len(p) for p in passages))
    ids = torch.full((len(passages), width), pad, dtype=torch.long)
    mask = torch.zeros(len(passages), width, dtype=torch.bool)
    for i, p in enumerate(passages):
        ids[i, :len(p)], mask[i, :len(p)] = torch.as_tensor(list(p), dtype=torch.long), True
    return ids, mask


class _CorpusRetriever:
    """Top-k over a fixed corpus by the score matrix [B, N] of the subclass's `scores(queries, mask)`."""

    scores: Callable[[Tensor, Tensor], Tensor]

    def __init__(self, passages: Sequence[Sequence[int]], pad: int = 0) -> None:
        self.ids, self.mask = pad_corpus(passages, pad)

    def __call__(self, queries: Tensor, k: int, query_mask: Tensor | None = None) -> Retrieved:
        mask = torch.ones_like(queries, dtype=torch.bool) if query_mask is None else query_mask.bool()
        scores = self.scores(queries, mask)
        best = scores.topk(min(k, scores.shape[1]), dim=-1)
        return Retrieved(self.ids[best.indices], self.mask[best.indices], best.values)


class BM25Retriever(_CorpusRetriever):
    """BM25 over token ids: Σ_{q ∈ query} idf(q) · f(q, p)(k₁ + 1) / (f(q, p) + k₁(1 − b + b·|p|/avg|p|))
    with idf(q) = ln(1 + (N − n(q) + ½)/(n(q) + ½)) (Lucene's non-negative form)."""

    def __init__(self, passages: Sequence[Sequence[int]], vocab: int, k1: float = 1.2, b: float = 0.75,
                 pad: int = 0) -> None:
        super().__init__(passages, pad)
        counts = torch.zeros(len(passages), vocab)
        for i, p in enumerate(passages):
            counts[i].index_add_(0, torch.as_tensor(list(p), dtype=torch.long), torch.ones(len(p)))
        n = len(passages)
        df = (counts > 0).sum(0).float()
        self.idf = torch.log1p((n - df + 0.5) / (df + 0.5))
        length = counts.sum(1, keepdim=True)
        self.weight = counts * (k1 + 1) / (counts + k1 * (1 - b + b * length / length.mean().clamp(min=1)))

    def scores(self, queries: Tensor, query_mask: Tensor) -> Tensor:
        q = torch.zeros(queries.shape[0], self.weight.shape[1])
        q.scatter_add_(1, queries.masked_fill(~query_mask, 0), query_mask.float())   # query term counts
        return (q * self.idf) @ self.weight.t()


class DenseRetriever(_CorpusRetriever):
    """Maximum inner product of L2-normalized embeddings, over a faiss `IndexFlatIP` (exact)."""

    def __init__(self, passages: Sequence[Sequence[int]], embed: Callable[[Tensor, Tensor], Tensor],
                 pad: int = 0, batch: int = 64) -> None:
        import faiss

        super().__init__(passages, pad)
        self.embed = embed
        with torch.no_grad():
            vecs = torch.cat([F.normalize(embed(self.ids[i:i + batch], self.mask[i:i + batch]).float(), dim=-1)
                              for i in range(0, len(self.ids), batch)])
        self.index = faiss.IndexFlatIP(vecs.shape[1])
        self.index.add(vecs.numpy())

    @classmethod
    def from_encoder(cls, model: ArchModel, passages: Sequence[Sequence[int]], pad: int = 0) -> DenseRetriever:
        """Embeddings from the spec's own encoder: its output (the memory) mean-pooled over the tokens."""
        stepper = EncoderDecoder(model)

        def embed(ids: Tensor, mask: Tensor) -> Tensor:
            memory = stepper.encoder_outputs(ids, mask)[0]
            m = mask[..., None].to(memory.dtype)
            return (memory * m).sum(1) / m.sum(1).clamp(min=1)

        return cls(passages, embed, pad)

    def __call__(self, queries: Tensor, k: int, query_mask: Tensor | None = None) -> Retrieved:
        mask = torch.ones_like(queries, dtype=torch.bool) if query_mask is None else query_mask.bool()
        with torch.no_grad():
            q = F.normalize(self.embed(queries, mask).float(), dim=-1)
        scores, rows = self.index.search(q.numpy(), min(k, self.index.ntotal))
        idx = torch.as_tensor(rows)
        return Retrieved(self.ids[idx], self.mask[idx], torch.as_tensor(scores))


class CallableRetriever:
    """Any function (queries [B, Lq], k) → `Retrieved` (your search service, a precomputed table)."""

    def __init__(self, fn: Callable[[Tensor, int], Retrieved]) -> None:
        self.fn = fn

    def __call__(self, queries: Tensor, k: int, query_mask: Tensor | None = None) -> Retrieved:
        return self.fn(queries, k)


def pair_inputs(question: Tensor, question_mask: Tensor, got: Retrieved, pad: int = 0) -> tuple[Tensor, Tensor]:
    """Each (question, passage) as one source: the question's tokens then the passage's, packed to
    the left (FiD's "question: … context: …" without the words). → ids, mask [B·k, Lq + Lp]."""
    b, k, _ = got.ids.shape
    q = question[:, None].expand(-1, k, -1)
    qm = question_mask.bool()[:, None].expand(-1, k, -1)
    ids = torch.cat((q, got.ids), -1).reshape(b * k, -1)
    mask = torch.cat((qm, got.mask), -1).reshape(b * k, -1)
    order = (~mask).to(torch.int8).argsort(dim=-1, stable=True)  # real tokens first, in order
    return ids.gather(1, order).masked_fill(~mask.gather(1, order), pad), mask.gather(1, order)


class _Fused(EncoderDecoder):
    """`EncoderDecoder` whose encoder outputs are FiD's fusion of k encoded passages."""

    def __init__(self, model: ArchModel, retriever, k: int, pad: int) -> None:
        super().__init__(model)
        self.retriever, self.k, self.pad = retriever, k, pad

    def encoder_outputs(self, source: Tensor, attention_mask: Tensor | None = None) -> State:
        mask = torch.ones_like(source, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        ids, pmask = pair_inputs(source, mask, self.retriever(source, self.k, mask), self.pad)
        outs = super().encoder_outputs(ids, pmask)
        b = source.shape[0]
        fused = []
        for t in outs:  # [B·k, S, …] or [B·k, H, S, hd] → the k sequences of a row side by side
            if t.dim() == 4:
                fused.append(t.unflatten(0, (b, -1)).permute(0, 2, 1, 3, 4).flatten(2, 3))
            else:
                fused.append(t.unflatten(0, (b, -1)).flatten(1, 2))
        return tuple(fused)


class FusionInDecoder:
    """FiD over a two-input `model`: `forward(question, decoder_input_ids, labels)` → (logits, loss);
    `generate(question, …)` as `ArchModel.generate`."""

    def __init__(self, model: ArchModel, retriever, k: int = 4, pad: int = 0) -> None:
        self.model, self.stepper = model, _Fused(model, retriever, k, pad)

    def forward(self, question: Tensor, decoder_input_ids: Tensor, labels: Tensor | None = None,
                question_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        enc = self.stepper.encoder_outputs(question, question_mask)
        b, t = decoder_input_ids.shape
        logits, _ = self.stepper.step(decoder_input_ids, 0, self.stepper.decoder_state(b, t) + enc)
        loss = None if labels is None else F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(),
                                                           ignore_index=IGNORE_INDEX)
        return logits, loss

    __call__ = forward

    def generate(self, question: Tensor, question_mask: Tensor | None = None, decoder_start_token_id: int = 0,
                 **kwargs) -> Tensor:
        from archc.backends.torch.generate import generate

        start = torch.full((question.shape[0], 1), decoder_start_token_id, dtype=torch.long, device=question.device)
        return generate(self.stepper.encode(question, question_mask), start, **kwargs)  # type: ignore[arg-type]


class RAG:
    """RAG over a two-input `model`: `forward(question, decoder_input_ids, labels)` → (per-token
    marginal log-probabilities [B, T, V] for RAG-Token, None for RAG-Sequence; the loss), the
    passages marginalized with p(z|x) = softmax(retrieval scores)."""

    def __init__(self, model: ArchModel, retriever, k: int = 4, marginalize: str = "token", pad: int = 0) -> None:
        if marginalize not in ("token", "sequence"):
            raise ValueError("marginalize is 'token' (RAG-Token) or 'sequence' (RAG-Sequence)")
        self.model, self.retriever, self.k, self.marginalize, self.pad = model, retriever, k, marginalize, pad
        self.stepper = EncoderDecoder(model)

    def _passage_logprobs(self, question: Tensor, decoder_input_ids: Tensor, question_mask: Tensor | None
                          ) -> tuple[Tensor, Tensor]:
        """(log p(y_t | x, z, y_<t) for every passage [B, k, T, V], log p(z | x) [B, k])."""
        mask = torch.ones_like(question, dtype=torch.bool) if question_mask is None else question_mask.bool()
        got = self.retriever(question, self.k, mask)
        ids, pmask = pair_inputs(question, mask, got, self.pad)
        b, k = got.scores.shape
        t = decoder_input_ids.shape[1]
        state = self.stepper.decoder_state(b * k, t) + self.stepper.encoder_outputs(ids, pmask)
        logits, _ = self.stepper.step(decoder_input_ids.repeat_interleave(k, 0), 0, state)
        return logits.float().log_softmax(-1).unflatten(0, (b, k)), got.scores.float().log_softmax(-1)

    def forward(self, question: Tensor, decoder_input_ids: Tensor, labels: Tensor,
                question_mask: Tensor | None = None) -> tuple[Tensor | None, Tensor]:
        logp, doc = self._passage_logprobs(question, decoder_input_ids, question_mask)
        keep = labels != IGNORE_INDEX
        gold = logp.gather(-1, labels.clamp(min=0)[:, None, :, None].expand(-1, logp.shape[1], -1, 1))[..., 0]
        gold = gold * keep[:, None].to(gold.dtype)                                       # [B, k, T]
        if self.marginalize == "sequence":
            seq = torch.logsumexp(doc + gold.sum(-1), dim=1)                              # log p(y | x)
            return None, -seq.sum() / keep.sum().clamp(min=1)
        marginal = torch.logsumexp(doc[..., None, None] + logp, dim=1)                   # [B, T, V]
        nll = -marginal.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
        return marginal, (nll * keep).sum() / keep.sum().clamp(min=1)

    __call__ = forward

    @torch.no_grad()
    def generate(self, question: Tensor, question_mask: Tensor | None = None, max_new_tokens: int = 32,
                 decoder_start_token_id: int = 0, eos_token_id: int | None = None) -> Tensor:
        """RAG-Token's greedy decoding: each token the argmax of Σ_z p(z|x) p(y_t | x, z, y_<t), the
        k passages decoded side by side over their own states."""
        mask = torch.ones_like(question, dtype=torch.bool) if question_mask is None else question_mask.bool()
        got = self.retriever(question, self.k, mask)
        ids, pmask = pair_inputs(question, mask, got, self.pad)
        b, k = got.scores.shape
        doc = got.scores.float().log_softmax(-1)
        state = self.stepper.decoder_state(b * k, 1 + max_new_tokens) + self.stepper.encoder_outputs(ids, pmask)
        out = torch.full((b, 1), decoder_start_token_id, dtype=torch.long, device=question.device)
        done = torch.zeros(b, dtype=torch.bool, device=question.device)
        for i in range(max_new_tokens):
            logits, state = self.stepper.step(out[:, -1:].repeat_interleave(k, 0), i, state)
            marginal = torch.logsumexp(doc[..., None] + logits[:, -1].float().log_softmax(-1).unflatten(0, (b, k)), 1)
            nxt = marginal.argmax(-1)
            if eos_token_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos_token_id), nxt)
                done |= nxt == eos_token_id
            out = torch.cat((out, nxt[:, None]), 1)
            if eos_token_id is not None and bool(done.all()):
                break
        return out


__all__ = ["RAG", "BM25Retriever", "CallableRetriever", "DenseRetriever", "FusionInDecoder", "Retrieved",
           "pad_corpus", "pair_inputs"]
