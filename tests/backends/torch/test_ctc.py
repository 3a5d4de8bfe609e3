"""The CTC head (`ctc_head`) against brute-force enumeration: on short inputs every alignment
(a symbol or the blank per frame) is enumerated, those that collapse (repeats merged, blanks
dropped) to the label sequence summed, so −log p(labels) is exact — for sequences of different
input and label lengths in one batch, and a label sequence too long to fit (it adds 0); greedy
`transcribe`; a BiLSTM learns to transcribe."""

from __future__ import annotations

import itertools

import pytest
import torch

import archc
from archc.backends.torch import build

SPEC = """
model t(tokens) {
  x = embed(tokens, 8, 12)
  x = lstm(x, hidden=8, bidirectional=true)
  return ctc_head(x, classes=2)
}
"""


def _collapse(path) -> list[int]:
    merged = [s for i, s in enumerate(path) if i == 0 or s != path[i - 1]]
    return [s for s in merged if s != 0]


def _brute_force_nll(log_probs: torch.Tensor, target: list[int]) -> torch.Tensor:
    """−log Σ over every alignment of `log_probs` [T, C + 1] that collapses to `target`."""
    total = [log_probs[range(len(path)), list(path)].sum()
             for path in itertools.product(range(log_probs.shape[1]), repeat=log_probs.shape[0]) if _collapse(path) == target]
    return -torch.logsumexp(torch.stack(total), 0) if total else torch.tensor(float("inf"), dtype=log_probs.dtype)


def test_the_loss_equals_enumeration_of_alignments():
    model = build(archc.loads(SPEC, "t.arch").graph, seed=0).double()
    ids = torch.randint(0, 8, (3, 5), generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    labels = torch.tensor([[1, 2, 2], [2, 1, -100], [1, 1, 2]])  # the third cannot fit in 2 frames: adds 0
    out = model(ids, attention_mask=mask, labels=labels)
    log_probs = torch.log_softmax(out.logits, -1)
    want = sum(_brute_force_nll(log_probs[b, : int(mask[b].sum())], [s for s in labels[b].tolist() if s > 0])
               for b in range(2))
    torch.testing.assert_close(out.loss, want / 8, rtol=1e-10, atol=1e-10)  # 8 label symbols in all


def test_transcribe_is_the_greedy_best_path():
    model = build(archc.loads(SPEC, "t.arch").graph, seed=0).eval()
    ids = torch.randint(0, 8, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    best = model(ids, attention_mask=mask).logits.argmax(-1)
    assert model.transcribe(ids, attention_mask=mask) == [_collapse(best[0].tolist()), _collapse(best[1, :6].tolist())]
    with pytest.raises(ValueError, match="CTC model"):
        build(archc.loads(SPEC.replace("ctc_head", "token_cls_head"), "c.arch").graph).transcribe(ids)


def test_a_bilstm_learns_to_transcribe():
    """Frames are symbols held for 1–3 frames with silences (0) between some: the label is the
    sequence of symbols, each once."""
    torch.manual_seed(0)
    model = build(archc.loads(SPEC, "t.arch").graph, seed=0).train()

    def batch(n):
        ids, labels = [], []
        for _ in range(n):
            frames, target = [], []
            while len(frames) < 10:
                s = int(torch.randint(1, 3, ()))
                if target and target[-1] == s:
                    frames.append(0)  # a repeated symbol needs a blank between
                frames += [s] * int(torch.randint(1, 3, ()))
                target.append(s)
            ids.append(frames[:10])
            labels.append(_collapse(frames[:10]) + [-100] * 10)
        width = max(len([s for s in x if s > 0]) for x in labels)
        return torch.tensor(ids), torch.tensor([x[:width] for x in labels])

    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(150):
        ids, labels = batch(16)
        loss = model(ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    ids, labels = batch(32)
    got = model.eval().transcribe(ids)
    assert sum(g == [s for s in x if s > 0] for g, x in zip(got, labels.tolist(), strict=True)) >= 30
