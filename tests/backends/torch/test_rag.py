"""Retrieval-augmented generation (`rag.py`): BM25 and the dense faiss retriever against their
formulas computed by brute force; FiD against the generator run on the question and passage (k
copies of one passage fuse to it exactly: attention over duplicated keys is attention over one
copy) and depending on every passage; RAG-Sequence's and RAG-Token's marginal likelihoods against
the generator's per-passage forward combined by their definitions; RAG-Token's greedy decoding."""

from __future__ import annotations

import math

import pytest
import torch

import archc
from archc.backends.torch import build
from archc.backends.torch.rag import (
    RAG,
    BM25Retriever,
    CallableRetriever,
    DenseRetriever,
    FusionInDecoder,
    Retrieved,
    pad_corpus,
)
from tests.backends.torch.test_seq2seq import SPEC, VOCAB

pytest.importorskip("faiss")

CORPUS = [[1, 2, 3], [2, 2, 4, 1], [4, 4], [3, 1, 1, 1, 2], [0, 4, 3]]


@pytest.fixture(scope="module")
def model():
    m = build(archc.loads(SPEC, "t5.arch").graph, seed=0).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.5)
    return m


def test_bm25_is_the_formula():
    queries = torch.tensor([[2, 4], [1, 3]])
    got = BM25Retriever(CORPUS, VOCAB)(queries, 5)
    n, avg = len(CORPUS), sum(map(len, CORPUS)) / len(CORPUS)
    for row, q in enumerate(queries.tolist()):
        want = []
        for p in CORPUS:
            score = 0.0
            for term in q:
                df = sum(term in d for d in CORPUS)
                f = p.count(term)
                score += math.log(1 + (n - df + 0.5) / (df + 0.5)) * f * 2.2 / (f + 1.2 * (0.25 + 0.75 * len(p) / avg))
            want.append(score)
        order = sorted(range(n), key=lambda i: -want[i])
        torch.testing.assert_close(got.scores[row], torch.tensor([want[i] for i in order]))
        ids, mask = pad_corpus(CORPUS)
        assert torch.equal(got.ids[row], ids[order]) and torch.equal(got.mask[row], mask[order])


def test_dense_retriever_is_exact_cosine_search(model):
    retriever = DenseRetriever.from_encoder(model, CORPUS)
    queries = torch.tensor([[1, 2, 3], [4, 4, 0]])
    got = retriever(queries, 3)
    ids, mask = pad_corpus(CORPUS)
    with torch.no_grad():
        docs = torch.nn.functional.normalize(retriever.embed(ids, mask), dim=-1)
        qs = torch.nn.functional.normalize(retriever.embed(queries, torch.ones_like(queries, dtype=torch.bool)), dim=-1)
    want = (qs @ docs.t()).topk(3)
    torch.testing.assert_close(got.scores, want.values)
    assert torch.equal(got.ids, ids[want.indices])
    assert torch.equal(got.ids[0, 0], ids[0])  # a passage finds itself


def _fixed(passages: list[list[int]], scores: list[float]) -> CallableRetriever:
    """Every query retrieves these passages with these scores."""
    ids, mask = pad_corpus(passages)

    def fn(queries, k):
        b = queries.shape[0]
        return Retrieved(ids[None, :k].expand(b, -1, -1), mask[None, :k].expand(b, -1, -1),
                         torch.tensor(scores[:k]).expand(b, -1))

    return CallableRetriever(fn)


def test_fid_fuses_duplicates_to_one_passage_and_reads_every_passage(model):
    question, target = torch.tensor([[1, 2], [3, 3]]), torch.tensor([[0, 4, 1, 2], [0, 2, 2, 3]])
    fid = FusionInDecoder(model, _fixed([[4, 3, 1]] * 3, [0.0] * 3), k=3)
    with torch.no_grad():
        logits, _ = fid(question, target)
        alone = model(torch.cat((question, torch.tensor([[4, 3, 1]] * 2)), 1), tgt=target).logits
    torch.testing.assert_close(logits, alone, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        other, _ = FusionInDecoder(model, _fixed([[4, 3, 1], [4, 3, 1], [2, 2]], [0.0] * 3), k=3)(question, target)
    assert (other - logits).abs().max() > 1e-3
    out = fid.generate(question, max_new_tokens=4)
    assert torch.equal(out, model.generate(torch.cat((question, torch.tensor([[4, 3, 1]] * 2)), 1), max_new_tokens=4))


@pytest.mark.parametrize("marginalize", ["sequence", "token"])
def test_rag_marginalizes_by_its_definition(model, marginalize):
    passages, scores = [[4, 3, 1], [2, 2], [1, 0, 4, 4]], [0.3, -1.0, 0.9]
    question, target = torch.tensor([[1, 2], [3, 3]]), torch.tensor([[0, 4, 1, 2], [0, 2, 2, 3]])
    labels = torch.tensor([[4, 1, 2, 0], [2, 2, 3, -100]])
    rag = RAG(model, _fixed(passages, scores), k=3, marginalize=marginalize)
    with torch.no_grad():
        _, loss = rag(question, target, labels)
        doc = torch.tensor(scores).log_softmax(-1)
        per = torch.stack([model(torch.cat((question, torch.tensor([p] * 2)), 1), tgt=target).logits.log_softmax(-1)
                           for p in passages], 1)                                            # [B, k, T, V]
    keep = labels != -100
    if marginalize == "sequence":
        gold = per.gather(-1, labels.clamp(min=0)[:, None, :, None].expand(-1, 3, -1, 1))[..., 0] * keep[:, None]
        want = -torch.logsumexp(doc + gold.sum(-1), 1).sum() / keep.sum()
    else:
        marginal = torch.log((doc.exp()[:, None, None] * per.exp()).sum(1))
        want = -(marginal.gather(-1, labels.clamp(min=0)[..., None])[..., 0] * keep).sum() / keep.sum()
    torch.testing.assert_close(loss, want, atol=1e-5, rtol=1e-5)
    if marginalize == "token":
        out = rag.generate(question, max_new_tokens=1)
        first = torch.log((doc.exp()[:, None] * per[:, :, 0].exp()).sum(1)).argmax(-1)
        assert torch.equal(out[:, 1], first)
