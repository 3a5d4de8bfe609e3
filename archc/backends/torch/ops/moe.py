"""Mixture of experts: top-k softmax routing (Mixtral), Switch top-1 with a capacity factor and
token dropping while training (Fedus et al.), shared experts (DeepSeekMoE), load-balancing and router z-losses.

Routing produces one dense gate matrix G [N, E] (zero where a token does not go), computed with
tensor ops only — top-k, one-hot, cumulative sums for the capacity ranks — so the routing is the
same in every mode. Dispatch then has two forms with identical results:

* eager: for each expert (a loop over E, fixed by the spec, never over tokens), gather its tokens,
  run the expert on them alone, scale by the gate and `index_add` back — compute ∝ top_k;
* traced (`torch.compile` / `torch.export`), and for a handful of tokens (decoding), where a
  gather per expert costs more than the FLOPs it saves: every expert runs on every token and G
  weights the sum. There is no data-dependent `nonzero` in the graph — the reason transformers' Mixtral does
  not export — and the length stays dynamic. This costs E/top_k× the expert FLOPs, the usual
  price of exporting an MoE without a grouped-GEMM op (optimum does the same).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archc.backends.torch.context import Context, tracing
from archc.backends.torch.init import Init
from archc.backends.torch.module import OpModule
from archc.backends.torch.ops.ffn import ACTIVATIONS
from archc.backends.torch.registry import implements


def route(logits: Tensor, top_k: int, capacity: int | None, renormalize: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Router logits [N, E] → (gates G [N, E], router probabilities [N, E], top-k expert ids [N, k]).

    Probabilities are a softmax over all experts (in fp32). With top_k > 1 the chosen
    probabilities are renormalized to sum to one (Mixtral; not with `renormalize=False`, as
    Qwen2-MoE and Jamba); with top_k = 1 the gate is the raw
    probability (Switch Transformer). With a capacity C, each expert takes at most C assignments,
    first choices before second choices and earlier tokens first (GShard / Switch priority);
    the rest are dropped (their gate is zero, so the residual carries them through).
    """
    probs = logits.float().softmax(-1)
    top_p, top_i = probs.topk(top_k, dim=-1)
    if top_k > 1 and renormalize:
        top_p = top_p / top_p.sum(-1, keepdim=True)
    e = logits.shape[-1]
    onehot = F.one_hot(top_i, e).to(probs.dtype)  # [N, k, E]
    if capacity is not None:
        by_choice = onehot.transpose(0, 1).reshape(-1, e)  # [k·N, E]: all first choices first
        rank = (by_choice.cumsum(0) - 1) * by_choice
        keep = (rank < capacity).to(probs.dtype) * by_choice
        onehot = keep.reshape(top_k, -1, e).transpose(0, 1)
    gates = (onehot * top_p[..., None]).sum(1)  # [N, E]
    return gates, probs, top_i


def load_balancing_loss(probs: Tensor, top_i: Tensor, experts: int) -> Tensor:
    """E · Σ_e f_e · P_e (Switch eq. 4, summed over the k choices as transformers' Mixtral):
    f_e the fraction of tokens whose choice goes to e, P_e the mean router probability of e.
    Equals 1 under perfectly uniform routing."""
    f = F.one_hot(top_i, experts).float().mean(0)  # [k, E]
    return experts * (f * probs.mean(0)[None]).sum()


def router_z_loss(logits: Tensor) -> Tensor:
    """mean(logsumexp(logits)²) (ST-MoE, Zoph et al. eq. 5): keeps router logits small."""
    return torch.logsumexp(logits.float(), dim=-1).pow(2).mean()


@implements("moe")
class MoE(OpModule):
    """`router` Linear(d, E) (+ bias), `experts.{e}` and `shared.{s}` expert networks (any FFN op)."""

    @classmethod
    def build(cls, p, in_types, out_type, bctx):
        m = cls(p, in_types, out_type)
        spec = p.expert
        m.experts = nn.ModuleList(bctx.build_op(spec["op"], spec["params"], in_types) for _ in range(p.experts))
        m.shared = nn.ModuleList(bctx.build_op(spec["op"], spec["params"], in_types)
                                 for _ in range(p.shared_experts))
        return m

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.router = self.make_linear("router")

    def init_weights(self, init: Init) -> None:
        init.default(self)  # the router; each expert initializes its own weights
        for m in (*self.experts, *self.shared):
            m.init_weights(init)

    def capacity(self, n_tokens: int) -> int | None:
        f = self.params.capacity_factor
        return None if f is None else max(1, math.ceil(f * self.params.top_k * n_tokens / self.params.experts))

    def forward(self, x: Tensor, ctx: Context) -> Tensor:
        p = self.params
        shape = x.shape
        h = x.reshape(-1, shape[-1])
        r_in = h
        if self.training and p.jitter > 0:
            r_in = h * torch.empty_like(h).uniform_(1 - p.jitter, 1 + p.jitter)
        logits = self.router(r_in)
        # capacity dropping is a training-time balancing device: at inference every token gets its
        # experts, so a sequence's output does not depend on the rest of the batch or on future
        # tokens, and cached decoding equals the forward
        cap = self.capacity(h.shape[0]) if p.capacity_factor is not None and self.training else None
        gates, probs, top_i = route(logits, p.top_k, cap, p.renormalize)
        if p.aux_loss > 0:
            ctx.aux_losses.append(p.aux_loss * load_balancing_loss(probs, top_i, p.experts))
        if p.z_loss > 0:
            ctx.aux_losses.append(p.z_loss * router_z_loss(logits))
        out = self.run_experts(h, gates.to(h.dtype), top_i)
        for s in self.shared:
            out = out + s(h)
        return out.reshape(shape)

    def run_experts(self, h: Tensor, gates: Tensor, top_i: Tensor) -> Tensor:
        """Σ_e gate_e · expert_e(h) over the routed experts, for tokens h [N, d] with their gates
        [N, E] and choices [N, k]. (Expert parallelism replaces this on the instance with the
        all-to-all version: archc/backends/torch/distributed.py.)"""
        if (grouped := self.triton_kernels.get("grouped_matmul")) is not None and not tracing():
            return self._grouped(h, gates, top_i, grouped)
        out = torch.zeros_like(h)
        if tracing():  # no data-dependent shapes in traced graphs: every expert on every token
            for e, expert in enumerate(self.experts):
                out = out + expert(h) * gates[:, e:e + 1]
        else:  # only the experts some token chose, each on its own tokens (a decode step: top-k of E)
            for e in torch.unique(top_i).tolist():
                idx = gates[:, e].nonzero().squeeze(-1)
                if idx.numel():
                    out.index_add_(0, idx, self.experts[e](h[idx]) * gates[idx, e:e + 1])
        return out

    def _grouped(self, h: Tensor, gates: Tensor, top_i: Tensor, grouped: Any) -> Tensor:
        """`run_experts` with every expert's projections as one grouped matmul each (GLU experts:
        gate, up, down): the (token, choice) rows sorted by expert, the experts' weights stacked
        (autograd takes the stack's gradient back to each expert's own weights)."""
        k = top_i.shape[1]
        chosen = top_i.reshape(-1)
        order = torch.argsort(chosen, stable=True)
        token = order // k
        counts = torch.bincount(chosen, minlength=len(self.experts))
        offsets = F.pad(torch.cumsum(counts, 0), (1, 0))
        rows = h[token]
        weights = {n: torch.stack([getattr(e, n).weight for e in self.experts]) for n in ("gate_proj", "up_proj",
                                                                                          "down_proj")}
        act = F.silu if self.params.expert["op"] == "swiglu" else ACTIVATIONS["gelu_tanh"]
        inner = act(grouped(rows, weights["gate_proj"], offsets)) * grouped(rows, weights["up_proj"], offsets)
        y = grouped(inner, weights["down_proj"], offsets) * gates[token, chosen[order]][:, None]
        return torch.zeros_like(h).index_add_(0, token, y)
