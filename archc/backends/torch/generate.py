"""Autoregressive generation over `ArchModel.step`: greedy, temperature / top-k / top-p sampling,
beam search with length normalization, and speculative decoding with a draft model.

All decoding goes through the model's explicit state (`init_state` / `step`), so the same loop
serves KV caches and recurrent states. `step` is functional (it returns new state tensors and
leaves the old ones intact), which is what lets speculative decoding roll back for free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from archc.backends.torch.module import State

if TYPE_CHECKING:
    from archc.backends.torch.model import ArchModel


def warp(logits: Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Sampling distribution's logits: divided by the temperature, then all but the `top_k` most
    likely tokens and outside the smallest set whose probability reaches `top_p` (nucleus, Holtzman
    et al.) set to −inf. At least one token always survives (as transformers' warpers)."""
    logits = logits.float() / max(temperature, 1e-6)
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # mass before this token already reaches top_p
        drop[..., 0] = False
        logits = logits.masked_fill(drop.scatter(-1, idx, drop), float("-inf"))
    return logits


def _pick(logits: Tensor, sample: bool, gen: torch.Generator | None, **warp_args) -> Tensor:
    if not sample:
        return logits.argmax(-1)
    probs = warp(logits, **warp_args).softmax(-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


@torch.no_grad()
def generate(model: ArchModel, input_ids: Tensor, max_new_tokens: int = 32, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, num_beams: int = 1,
             length_penalty: float = 1.0, eos_token_id: int | None = None, draft: ArchModel | None = None,
             num_draft_tokens: int = 4, seed: int | None = None, compile: bool = False) -> Tensor:
    """Continue `input_ids` [B, T] by up to `max_new_tokens` tokens; returns [B, T + n].

    temperature 0 (the default) decodes greedily; > 0 samples from the warped distribution
    (`top_k`, `top_p`). `num_beams > 1` runs beam search; `draft` enables speculative decoding
    (batch 1). Sequences that produced `eos_token_id` are padded with it. `compile`: each new
    token is one call of the compiled decode step (`compiled.DecodeStep`: compiled on the first
    call for this batch size, then reused); greedy and sampled decoding only — beam search and
    speculative decoding reorder and roll back the state, which the compiled step keeps in place.
    """
    if compile and (num_beams > 1 or draft is not None):
        raise ValueError("compile=True decodes greedily or by sampling; beam search and speculative decoding "
                         "run the eager step")
    was_training = model.training
    model.eval()
    try:
        gen = torch.Generator(device=input_ids.device).manual_seed(seed) if seed is not None else None
        if num_beams > 1:
            return beam_search(model, input_ids, max_new_tokens, num_beams, length_penalty, eos_token_id)
        if draft is not None:
            return speculative(model, draft, input_ids, max_new_tokens, num_draft_tokens, temperature,
                               top_k, top_p, eos_token_id, gen)
        return _sample(model, input_ids, max_new_tokens, temperature, top_k, top_p, eos_token_id, gen, compile)
    finally:
        model.train(was_training)


def _sample(model: ArchModel, ids: Tensor, n: int, temperature: float, top_k: int | None, top_p: float | None,
            eos: int | None, gen: torch.Generator | None, compile: bool = False) -> Tensor:
    b, t = ids.shape
    if compile:
        from archc.backends.torch.compiled import decode_step

        compiled = decode_step(model, b, t + n)
        logits = compiled.prefill(ids)
    else:
        state = model.init_state(b, t + n)
        logits, state = model.step(ids, 0, state)
    sample = temperature > 0
    out = [ids]
    done = torch.zeros(b, dtype=torch.bool, device=ids.device)
    for i in range(n):
        nxt = _pick(logits[:, -1], sample, gen, temperature=temperature, top_k=top_k, top_p=top_p)
        if eos is not None:
            nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
            done = done | (nxt == eos)
        out.append(nxt[:, None])
        if (eos is not None and bool(done.all())) or i == n - 1:
            break
        if compile:
            logits = compiled(nxt[:, None], t + i)
        else:
            logits, state = model.step(nxt[:, None], t + i, state)
    return torch.cat(out, dim=1)


def _reorder(state: State, index: Tensor) -> State:
    return tuple(s.index_select(0, index) for s in state)


def beam_search(model: ArchModel, ids: Tensor, n: int, beams: int, length_penalty: float,
                eos: int | None) -> Tensor:
    """Beam search with length normalization: a finished hypothesis scores
    Σ log p / (generated length)^length_penalty (Wu et al., 2016; transformers' convention).
    Each step keeps the `beams` best unfinished continuations among the top 2·beams candidates;
    candidates ending in `eos` join the finished list. Returns the best hypothesis per batch row,
    padded with `eos` (or its last token) to a common length."""
    b, t = ids.shape
    dev = ids.device
    state = _reorder(model.init_state(b, t + n), torch.arange(b, device=dev).repeat_interleave(beams))
    logits, state = model.step(ids.repeat_interleave(beams, 0), 0, state)
    seqs = ids.repeat_interleave(beams, 0)
    scores = torch.zeros(b, beams, device=dev)
    scores[:, 1:] = float("-inf")  # all beams start identical: expand from the first only
    finished: list[list[tuple[float, Tensor]]] = [[] for _ in range(b)]
    for i in range(n):
        logp = F.log_softmax(logits[:, -1].float(), dim=-1)  # [B·beams, V]
        vocab = logp.shape[-1]
        cand = (scores.reshape(-1, 1) + logp).reshape(b, beams * vocab)
        top, idx = cand.topk(2 * beams, dim=-1)
        src_beam, token = idx // vocab, idx % vocab
        next_scores = torch.empty(b, beams, device=dev)
        next_src = torch.empty(b, beams, dtype=torch.long, device=dev)
        next_tok = torch.empty(b, beams, dtype=torch.long, device=dev)
        for r in range(b):
            kept = 0
            for j in range(2 * beams):
                src = r * beams + int(src_beam[r, j])
                if eos is not None and int(token[r, j]) == eos:
                    if j < beams:
                        hyp = torch.cat((seqs[src], token[r, j:j + 1]))
                        finished[r].append((float(top[r, j]) / (i + 1) ** length_penalty, hyp))
                    continue
                next_scores[r, kept], next_src[r, kept], next_tok[r, kept] = top[r, j], src, token[r, j]
                kept += 1
                if kept == beams:
                    break
        flat_src = next_src.reshape(-1)
        seqs = torch.cat((seqs.index_select(0, flat_src), next_tok.reshape(-1, 1)), dim=1)
        scores = next_scores
        if eos is not None and all(
            len(finished[r]) >= beams and max(s for s, _ in finished[r]) >= float(scores[r].max()) / (i + 1) ** length_penalty
            for r in range(b)
        ):
            break
        if i == n - 1:
            break
        state = _reorder(state, flat_src)
        logits, state = model.step(next_tok.reshape(-1, 1), t + i, state)
    length = seqs.shape[1] - t
    best: list[Tensor] = []
    for r in range(b):
        for j in range(beams):
            finished[r].append((float(scores[r, j]) / length ** length_penalty, seqs[r * beams + j]))
        best.append(max(finished[r], key=lambda h: h[0])[1])
    width = max(len(s) for s in best)
    pad = eos if eos is not None else 0
    return torch.stack([F.pad(s, (0, width - len(s)), value=pad) for s in best])


def verify_draft_token(p: Tensor, q: Tensor, token: int, gen: torch.Generator | None) -> tuple[bool, Tensor]:
    """One acceptance test of speculative sampling: accept `token` (drawn from q) with probability
    min(1, p/q); otherwise return a replacement drawn from norm(max(0, p − q)). The token that
    comes out is distributed exactly as p (Leviathan et al., Theorem 1)."""
    ratio = float(p[token]) / max(float(q[token]), 1e-20)
    if float(torch.rand((), generator=gen)) < ratio:
        return True, torch.tensor(token)
    resid = (p - q).clamp(min=0)
    resid = resid / resid.sum() if float(resid.sum()) > 0 else p
    return False, torch.multinomial(resid, 1, generator=gen).squeeze(-1)


def speculative(target: ArchModel, draft: ArchModel, ids: Tensor, n: int, k: int, temperature: float,
                top_k: int | None, top_p: float | None, eos: int | None, gen: torch.Generator | None) -> Tensor:
    """Speculative decoding (Leviathan et al., 2023; Chen et al., 2023): the draft proposes `k`
    tokens, the target scores them in one step of k+1 tokens, and each draft token d is accepted
    with probability min(1, p(d)/q(d)); at the first rejection a token is drawn from
    norm(max(0, p − q)), and after k acceptances a bonus token from p. The output distribution is
    exactly the target's; with temperature 0 the output equals the target's greedy decoding.

    Rejected tokens are rolled back by keeping the state from before the verification step and
    re-running only the accepted tokens (`step` never mutates its input state)."""
    if ids.shape[0] != 1:
        raise ValueError("speculative decoding takes one sequence at a time (batch 1)")
    sample = temperature > 0
    t = ids.shape[1]
    max_len = t + n + k + 1
    t_state, d_state = target.init_state(1, max_len), draft.init_state(1, max_len)
    # consume the prompt except its last token; that token is the first one each round feeds in
    if t > 1:
        _, t_state = target.step(ids[:, :-1], 0, t_state)
        _, d_state = draft.step(ids[:, :-1], 0, d_state)
    out = ids
    last = ids[:, -1:]
    pos = t - 1
    while out.shape[1] - t < n:
        kk = min(k, n - (out.shape[1] - t))
        # draft proposes kk tokens
        d_logits_list, props = [], []
        ds, tok = d_state, last
        for j in range(kk):
            lg, ds = draft.step(tok, pos + j, ds)
            d_logits_list.append(lg[:, -1])
            tok = _pick(lg[:, -1], sample, gen, temperature=temperature, top_k=top_k, top_p=top_p)[:, None]
            props.append(tok)
        proposal = torch.cat(props, dim=1)  # [1, kk]
        # target verifies [last, proposal] in one step
        t_logits, v_state = target.step(torch.cat((last, proposal), dim=1), pos, t_state)
        accepted = 0
        new_tok: Tensor | None = None
        for j in range(kk):
            d_tok = proposal[:, j]
            if not sample:
                if int(t_logits[0, j].argmax()) != int(d_tok):
                    new_tok = t_logits[:, j].argmax(-1)
                    break
            else:
                p = warp(t_logits[:, j], temperature, top_k, top_p).softmax(-1)
                q = warp(d_logits_list[j], temperature, top_k, top_p).softmax(-1)
                ok, correction = verify_draft_token(p[0], q[0], int(d_tok), gen)
                if not ok:
                    new_tok = correction.reshape(1)
                    break
            accepted += 1
        if new_tok is None:  # every draft token accepted: a bonus token from the target
            new_tok = _pick(t_logits[:, kk], sample, gen, temperature=temperature, top_k=top_k, top_p=top_p)
        fed = torch.cat((last, proposal[:, :accepted]), dim=1)  # what both models have now consumed
        if target.positional_state:  # KV caches: entries past `fed` are masked and later overwritten
            t_state = v_state
        else:
            _, t_state = target.step(fed, pos, t_state)
        _, d_state = draft.step(fed, pos, d_state)
        pos += fed.shape[1]
        out = torch.cat((out, proposal[:, :accepted], new_tok[:, None]), dim=1)
        last = new_tok[:, None]
        if eos is not None and (out[0, t:] == eos).any():
            first = int((out[0, t:] == eos).nonzero()[0]) + t
            out = out[:, :first + 1]
            break
    return out[:, : t + n]
