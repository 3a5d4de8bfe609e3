"""Generation: greedy and beam search against transformers' `generate` on the same weights, the
sampling warpers against transformers' logits processors, speculative decoding against plain
decoding and against the target distribution."""

from __future__ import annotations

import pytest
import torch

from archc.backends.torch.generate import verify_draft_token, warp
from tests.backends.torch.test_hf_reference import LLAMA_SPEC, _build, llama_pair

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def pair():
    return llama_pair(kv=2)


def test_greedy_equals_transformers(pair):
    hf, ours = pair
    ids = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(1))
    ref = hf.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(ours.generate(ids, max_new_tokens=12), ref)


@pytest.mark.parametrize("eos", [None, 5])
def test_beam_search_equals_transformers(pair, eos):
    hf, ours = pair
    ids = torch.randint(0, 128, (1, 6), generator=torch.Generator().manual_seed(2))
    ref = hf.generate(ids, max_new_tokens=10, num_beams=3, do_sample=False, length_penalty=1.0,
                      eos_token_id=eos, pad_token_id=eos or 0, early_stopping=False)
    got = ours.generate(ids, max_new_tokens=10, num_beams=3, eos_token_id=eos)
    assert torch.equal(got, ref)


def test_cached_decoding_equals_full_forward(pair):
    _, ours = pair
    ids = torch.randint(0, 128, (2, 20))
    full = ours(ids).logits
    state = ours.init_state(2, 32)
    parts = []
    for a, b in ((0, 9), (9, 10), (10, 11), (11, 20)):
        lg, state = ours.step(ids[:, a:b], a, state)
        parts.append(lg)
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1.3e-6)


def test_warpers_equal_transformers_processors():
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(3))
    ids = torch.zeros(4, 1, dtype=torch.long)
    ref = TopPLogitsWarper(0.8)(ids, TopKLogitsWarper(10)(ids, TemperatureLogitsWarper(0.7)(ids, logits.clone())))
    got = warp(logits, temperature=0.7, top_k=10, top_p=0.8)
    assert torch.equal(torch.isinf(got), torch.isinf(ref))
    torch.testing.assert_close(got[~torch.isinf(got)], ref[~torch.isinf(ref)])


def test_sampling_is_reproducible_and_respects_top_k(pair):
    _, ours = pair
    ids = torch.randint(0, 128, (1, 5))
    a = ours.generate(ids, max_new_tokens=8, temperature=0.8, top_p=0.9, seed=7)
    b = ours.generate(ids, max_new_tokens=8, temperature=0.8, top_p=0.9, seed=7)
    assert torch.equal(a, b)
    # top_k=1 sampling is greedy decoding
    assert torch.equal(ours.generate(ids, max_new_tokens=8, temperature=1.0, top_k=1, seed=3),
                       ours.generate(ids, max_new_tokens=8))


def test_speculative_greedy_equals_target_greedy(pair):
    _, target = pair
    draft = _build(LLAMA_SPEC.format(kv=1, theta=500, scaling="", window=""))  # a different, random model
    ids = torch.randint(0, 128, (1, 6))
    ref = target.generate(ids, max_new_tokens=15)
    for k in (1, 3, 5):
        assert torch.equal(target.generate(ids, max_new_tokens=15, draft=draft, num_draft_tokens=k), ref)
    # a draft identical to the target has every token accepted and still gives the same output
    assert torch.equal(target.generate(ids, max_new_tokens=15, draft=target, num_draft_tokens=4), ref)


def test_speculative_acceptance_rule_preserves_target_distribution():
    gen = torch.Generator().manual_seed(0)
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    q = torch.tensor([0.1, 0.2, 0.3, 0.4])
    counts = torch.zeros(4)
    n = 20000
    drafts = torch.multinomial(q, n, replacement=True, generator=gen)
    for d in drafts.tolist():
        _, tok = verify_draft_token(p, q, d, gen)
        counts[int(tok)] += 1
    # 4 standard errors of a binomial proportion at n = 20000 is < 0.015
    torch.testing.assert_close(counts / n, p, atol=0.015, rtol=0)
