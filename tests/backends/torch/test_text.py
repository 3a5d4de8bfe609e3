"""Training windows and held-out scoring of a packed token stream (`archc.backends.torch.text`),
against the model's own loss over the whole stream and the definitions of perplexity and bits
per byte."""

from __future__ import annotations

import math

import numpy as np
import torch

import archc
from archc.backends.torch import build
from archc.backends.torch.text import TextTask, evaluate, windows
from tests.conftest import tiny_lm_spec


def _model():
    return build(archc.loads(tiny_lm_spec(vocab=64), "t.arch").graph, seed=0).eval()


def test_scoring_in_windows_scores_every_token_once():
    tokens = np.arange(3, 3 + 23, dtype=np.uint32) % 60
    w = windows(tokens, 63, 8)
    stream = [63, *tokens.tolist()]
    # consecutive windows share one token; together they cover the stream once, padding -1
    assert w[:, 0].tolist() == stream[0:len(stream) - 1:7][:len(w)]
    scored = [t for row in w.tolist() for t in row[1:] if t >= 0]
    assert scored == tokens.tolist()


def test_evaluate_equals_the_next_token_log_likelihood_when_one_window_holds_the_stream():
    """With one window the score is −Σ log p(token | the tokens before it) over `eos + tokens`,
    computed here with PyTorch's log_softmax on the logits; perplexity and bits per byte follow
    their definitions."""
    model = _model()
    tokens = np.random.default_rng(0).integers(3, 64, 40).astype(np.uint32)
    res = evaluate(model, tokens, 0, seq=64, text_bytes=50.0)
    ids = torch.tensor([[0, *tokens.tolist()]])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
        mean = float(-logp.gather(1, ids[0, 1:, None]).mean())
    assert res.tokens == 40 and math.isclose(res.loss, mean, rel_tol=1e-5)
    assert math.isclose(res.perplexity, math.exp(mean), rel_tol=1e-5)
    assert math.isclose(res.bits_per_byte, mean * 40 / math.log(2) / 50.0, rel_tol=1e-5)
    # in windows of 8, the first tokens of each window see less context: a different, finite score
    short = evaluate(model, tokens, 0, seq=8, batch=3)
    assert short.tokens == 40 and math.isfinite(short.loss) and short.bits_per_byte is None


def test_training_windows_are_slices_of_the_stream():
    tokens = np.arange(100, dtype=np.uint32)
    task = TextTask("text", 100, tokens, "numbers")
    ids, labels = task.batch(5, 16, torch.Generator().manual_seed(0))
    assert ids.shape == (5, 16) and torch.equal(ids, labels)
    assert all(row.tolist() == list(range(row[0], row[0] + 16)) for row in ids)
