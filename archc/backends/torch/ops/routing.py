"""Conditional computation around a block: mixture-of-depths (Raposo et al., 2024) and adaptive
computation time (Graves, 2016) as in the Universal Transformer (Dehghani et al., 2019).

The wrapped block is the node's body graph, run by its own `GraphModule` (parameters under
`<node>.body.`); its weights are shared across the ponder steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from archc.backends.torch.body import BodyOp
from archc.backends.torch.context import Context, reads_values
from archc.backends.torch.init import Init
from archc.backends.torch.module import State
from archc.backends.torch.registry import implements


class _BlockOp(BodyOp):
    """A block-bodied op with a Linear(d, 1) scoring unit (ACT's halting unit, MoD's router):
    N(0, 0.02) weight, bias `score_bias`."""

    score_bias = 0.0
    #: Attribute name of the scoring unit (so checkpoints keep the paper's name).
    score_name = "router"

    def init_weights(self, init: Init) -> None:
        score = getattr(self, self.score_name)
        init.normal_(score.weight)
        with torch.no_grad():
            score.bias.fill_(self.score_bias)
        self.body.init_weights(init)


@implements("act")
class AdaptiveComputationTime(_BlockOp):
    """`act(x, block=layer, max_steps=N, threshold=1−ε, ponder_cost=τ)`.

    Per position, step n computes a halting probability p_n = σ(halting(s_n)) from the current state
    and applies the block, s_{n+1} = block(s_n). A position halts at the first step where Σ p
    exceeds the threshold (forced at step N); its remainder R = 1 − Σ_{earlier} p replaces that
    step's p, and the output is the mean-field mixture Σ_n w_n s_{n+1} with weights summing to one
    (Graves eqs. 7–10). The ponder cost τ·mean(N(t) + R(t)) (Graves eq. 11, over unpadded
    positions) is added to the auxiliary losses.

    The loop runs `max_steps` times (fixed by the spec, so traced graphs keep it); in eager
    `forward` it stops early once every position has halted — later steps have zero weight.
    `step` always runs all steps, because each ponder step has its own copy of the block's state
    (KV caches of step n hold the step-n states of earlier tokens): `<node>.step{n}.<name>`.
    Weights: `halting` Linear(d, 1), N(0, 0.02) with bias 1 (as tensor2tensor's UT: early halting
    starts likely); the block's own init.
    """

    score_bias = 1.0
    score_name = "halting"

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.halting = self.make_linear("halting")


    def _ponder(self, x: Tensor, ctx: Context, state: State | None) -> tuple[Tensor, State]:
        p = self.params
        n_state = len(self.body.state_names)
        total = x.new_zeros(x.shape[:-1])  # Σ p of the steps taken so far
        running = torch.ones_like(total)
        ponder = torch.zeros_like(total)  # N + R
        out = torch.zeros_like(x)
        s = x
        new_state: list[Tensor] = []
        for n in range(p.max_steps):
            h = torch.sigmoid(self.halting(s)).squeeze(-1)
            last = n == p.max_steps - 1
            halts = running if last else running * (total + h > p.threshold).to(x.dtype)
            going = running - halts
            weight = going * h + halts * (1.0 - total)  # p_n, or the remainder at the halting step
            ponder = ponder + running + halts * (1.0 - total)
            total = total + going * h
            if state is None:
                s = self.body.run([s], ctx)[0][0]
            else:
                (s,), st = self.body.run([s], ctx, state[n * n_state:(n + 1) * n_state])
                new_state.extend(st)
            out = out + s * weight[..., None]
            running = going
            if state is None and reads_values() and not bool(running.any()):
                break
        if p.ponder_cost > 0:
            if ctx.attention_mask is not None:
                m = ctx.attention_mask.to(ponder.dtype)
                cost = (ponder * m).sum() / m.sum().clamp_min(1.0)
            else:
                cost = ponder.mean()
            ctx.aux_losses.append(p.ponder_cost * cost)
        return out, tuple(new_state)

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        assert ctx is not None
        return self._ponder(x, ctx, None)[0]


    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        return self._ponder(x, ctx, state)


@implements("mod")
class MixtureOfDepths(_BlockOp):
    """`mod(x, block=decoder, capacity=c)` (Raposo et al., 2024).

    A router r_i = w·x_i + b scores each token. In training, the top ⌈c·T⌉ tokens of each sequence
    (expert-choice, padding never chosen) are gathered in order and run through the block alone —
    compute ∝ c — with their real positions (RoPE sees per-sequence positions); the others skip it:

        x'_i = x_i + σ(r_i)·(block(X̃)_i − x_i)   if i is chosen, else x_i

    (the block's output includes its own residual, so block − x is its update; σ(r) puts the router
    on the gradient path, as the paper's r_i·f_i). Top-k over the sequence is not causal, so, as
    the paper's first method, a BCE loss (weight `aux_loss`) trains σ(r_i) to predict whether i was
    chosen, and in eval mode and in `step` a token is routed when σ(r_i) > 0.5 — a causal rule,
    so cached decoding equals the eval forward. The eval forward runs the block on all tokens with
    unrouted tokens masked out as keys (their own outputs are discarded).

    State: `routed` [B, max_len] (which earlier positions went through the block, the key mask of
    the block's attention caches) and the block's own state under `body.`.
    """

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.router = self.make_linear("router")


    def capacity(self, t: int) -> int:
        """⌈c·T⌉ (≥ 1 for T ≥ 1), in integer arithmetic so that a symbolic T stays symbolic."""
        num, den = self.params.capacity.as_integer_ratio()
        return (t * num + den - 1) // den

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        assert ctx is not None
        logits = self.router(x).squeeze(-1)  # [B, T]
        gate = torch.sigmoid(logits)
        if not self.training:
            routed = gate > 0.5
            if ctx.attention_mask is not None:
                routed = routed & ctx.attention_mask
            body_ctx = Context(ctx.positions, routed, aux_losses=ctx.aux_losses)
            y = self.body.run([x], body_ctx)[0][0]
            return x + torch.where(routed[..., None], (y - x) * gate[..., None], 0.0)
        d = x.shape[-1]
        scores = logits if ctx.attention_mask is None else logits.masked_fill(~ctx.attention_mask, float("-inf"))
        top = scores.topk(self.capacity(x.shape[1]), dim=1).indices.sort(dim=1).values  # [B, k] in order
        idx = top[..., None].expand(-1, -1, d)
        chosen = x.gather(1, idx)
        valid = ctx.attention_mask.gather(1, top) if ctx.attention_mask is not None else None
        body_ctx = Context(ctx.positions[top], valid, aux_losses=ctx.aux_losses)
        y = self.body.run([chosen], body_ctx)[0][0]
        out = x.scatter_add(1, idx, (y - chosen) * gate.gather(1, top)[..., None])
        if self.params.aux_loss > 0:
            target = torch.zeros_like(logits).scatter(1, top, 1.0)
            bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            if ctx.attention_mask is not None:
                m = ctx.attention_mask.to(bce.dtype)
                bce = (bce * m).sum() / m.sum().clamp_min(1.0)
            else:
                bce = bce.mean()
            ctx.aux_losses.append(self.params.aux_loss * bce)
        return out


    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        gate = torch.sigmoid(self.router(x).squeeze(-1))
        now = gate > 0.5
        routed = state[0].index_copy(1, ctx.positions, now)
        body_ctx = Context(ctx.positions, routed, aux_losses=ctx.aux_losses, decoding=True)
        (y,), body_state = self.body.run([x], body_ctx, state[1:])
        return x + torch.where(now[..., None], (y - x) * gate[..., None], 0.0), (routed, *body_state)
