"""The CRF tagging head (`crf_head`) against brute-force enumeration: on short sequences every tag
sequence is scored by the definition (start + emissions + transitions between consecutive
labelled tokens + end), so log Z is their log-sum-exp and Viterbi's answer their argmax — with
padding, a gap of unlabelled tokens (a word piece's continuation) and an unlabelled sequence; the
model's loss and `tag()`; a BiLSTM-CRF trains on a tagging task whose tags depend on their
neighbours, and its forward exports to ONNX."""

from __future__ import annotations

import itertools

import pytest
import torch

import archc
from archc.backends.torch import build

SPEC = """
model t(tokens) {
  x = embed(tokens, 16, 12)
  x = lstm(x, hidden=8, bidirectional=true)
  return crf_head(x, classes=3)
}
"""


def _model():
    model = build(archc.loads(SPEC, "t.arch").graph, seed=0).eval()
    with torch.no_grad():  # transitions strong enough that the best path is not each token's argmax
        model.head_module.transitions.normal_(0, 2.0, generator=torch.Generator().manual_seed(1))
    return model


def _head(model):
    return model.head_module


def _brute_force(head, emissions, mask):
    """(log Z, the best path's tags) of one sequence by enumerating every tagging of its labelled tokens."""
    trans, start, end = head.transitions, head.start_transitions, head.end_transitions
    where = [t for t in range(len(mask)) if mask[t]]
    scores, paths = [], []
    for tags in itertools.product(range(trans.shape[0]), repeat=len(where)):
        s = start[tags[0]] + end[tags[-1]] + sum(emissions[t, y] for t, y in zip(where, tags, strict=True))
        s = s + sum(trans[a, b] for a, b in itertools.pairwise(tags))
        scores.append(s)
        paths.append(tags)
    scores = torch.stack(scores)
    best = torch.full((len(mask),), -100)
    best[where] = torch.tensor(paths[int(scores.argmax())])
    return torch.logsumexp(scores, 0), best


MASKS = [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 1, 0, 1, 1], [1, 0, 0, 0, 1], [0, 0, 0, 0, 0]]


def test_the_loss_and_viterbi_equal_enumeration():
    head = _head(_model()).double()
    g = torch.Generator().manual_seed(0)
    emissions = torch.randn(len(MASKS), 5, 3, generator=g, dtype=torch.float64)
    mask = torch.tensor(MASKS, dtype=torch.bool)
    tags = torch.randint(0, 3, (len(MASKS), 5), generator=g).masked_fill(~mask, -100)
    with torch.no_grad():
        nll, best = head.nll(emissions, tags, mask), head.viterbi(emissions, mask)
    for b in range(len(MASKS)):
        if not mask[b].any():
            assert nll[b] == 0 and (best[b] == -100).all()
            continue
        log_z, want = _brute_force(head, emissions[b], mask[b])
        where = mask[b].nonzero()[:, 0].tolist()
        score = -_brute_force_score(head, emissions[b], where, tags[b, where].tolist())
        torch.testing.assert_close(nll[b], log_z + score, rtol=1e-12, atol=1e-12)
        assert best[b].tolist() == want.tolist()


def _brute_force_score(head, emissions, where, tags):
    s = head.start_transitions[tags[0]] + head.end_transitions[tags[-1]]
    s = s + sum(emissions[t, y] for t, y in zip(where, tags, strict=True))
    return s + sum(head.transitions[a, b] for a, b in itertools.pairwise(tags))


def test_the_models_loss_is_per_labelled_token_and_tag_decodes():
    model = _model()
    ids = torch.randint(0, 16, (2, 6))
    labels = torch.randint(0, 3, (2, 6))
    labels[1, 4:] = -100  # padding
    out = model(ids, labels=labels)
    head = _head(model)
    want = head.nll(out.logits, labels, labels != -100).sum() / 10
    torch.testing.assert_close(out.loss, want)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    tags = model.tag(ids, attention_mask=mask)
    assert tags.shape == (2, 6) and (tags[1, 4:] == -100).all()
    assert torch.equal(tags, head.viterbi(model(ids, attention_mask=mask).logits, mask))
    with pytest.raises(ValueError, match="tagging model"):
        build(archc.loads(SPEC.replace("crf_head(x, classes=3)", "cls_head(x, classes=3)"), "c.arch").graph).tag(ids)


def test_a_bilstm_crf_learns_tags_that_depend_on_their_neighbours():
    """Tag = 1 after token 0 else 2, and 0 on token 0 itself: the emissions alone see one token;
    the transitions carry the rest. Trained, the CRF tags held-out sequences all right."""
    torch.manual_seed(0)
    model = build(archc.loads(SPEC, "t.arch").graph, seed=0).train()

    def batch(n):
        ids = torch.randint(0, 4, (n, 8))
        tags = torch.where(ids == 0, 0, torch.where(torch.nn.functional.pad(ids[:, :-1], (1, 0), value=1) == 0, 1, 2))
        return ids, tags

    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(120):
        ids, tags = batch(16)
        loss = model(ids, labels=tags).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    ids, tags = batch(32)
    assert (model.eval().tag(ids) == tags).float().mean() > 0.97
