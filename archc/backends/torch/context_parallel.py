"""Context parallelism by state passing: each rank holds a contiguous chunk of every sequence, and
each recurrent mixer scans its chunk from the state the previous rank hands it.

The mixers' `step` already computes a chunk from a given state (chunked prefill: step equals the
forward for every chunking, tested for every mixer), so a rank's chunk is exactly what the whole
sequence computes there once its incoming state is right. The hand-off is sequential — rank r
waits for rank r − 1's final state, then sends its own to r + 1 — and so is its backward: the
last rank differentiates its chunk first and sends the gradient of its incoming state back.
`_StatePassing` is that autograd function, one node per layer and rank, so every rank meets the
layers' point-to-point messages in the same order (forward, then backward in reverse).

Ops that mix no positions run on their chunk as they are. Self-attention attends from its chunk's
queries to the keys and values of the whole sequence, gathered from every rank (the all-gather
form of context parallelism that Llama 3 trained with: the ring's traffic, without its overlap
and with the whole K/V held at once; the ring is next). Ops without a context-parallel form are
refused before launching (`unsupported`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from archc.backends.torch.context import Context
from archc.backends.torch.model import ArchModel
from archc.passes.facts import node_parallel

#: ops whose `ring` context runs here, by gathering the keys and values of the whole sequence
GATHERED = ("attention",)


def unsupported(graph: Any) -> str | None:
    """The first node a split of the sequence cannot run, with why (None: all run)."""
    for node in graph.nodes.values():
        rule = node_parallel(graph, node)
        if rule.context == "ring" and node.op not in GATHERED:
            return f"`{node.id}` ({node.op}): its ring attention is planned, not run yet"
        if rule.context == "none":
            return f"`{node.id}` ({node.op}): {rule.why_context or 'no context-parallel form'}"
    return None


def _send(tensors: tuple[Tensor, ...], dst: int, group: Any) -> None:
    for t in tensors:
        dist.send(t.detach().contiguous(), group_dst=dst, group=group)


def _recv(like: tuple[Tensor, ...], src: int, group: Any) -> tuple[Tensor, ...]:
    out = []
    for t in like:
        buf = torch.empty(t.shape, dtype=t.dtype, device=t.device)  # contiguous, whatever `t`'s strides
        dist.recv(buf, group_src=src, group=group)
        out.append(buf)
    return tuple(out)


class _StatePassing(torch.autograd.Function):
    """y = mod.step(x, state from rank r − 1); the final state goes to rank r + 1. Backward: the
    gradient of the final state comes from rank r + 1, the incoming state's goes to rank r − 1."""

    @staticmethod
    def forward(fctx: Any, mod: nn.Module, sub: Context, group: Any, x: Tensor, *params: Tensor) -> Tensor:
        rank, size = dist.get_rank(group), dist.get_world_size(group)
        start = mod.init_state(x.shape[0], x.shape[1], x.device, x.dtype)
        incoming = start if rank == 0 else _recv(start, rank - 1, group)
        with torch.enable_grad():
            xs = x.detach().requires_grad_()
            held = tuple(s.detach().requires_grad_(s.is_floating_point()) for s in incoming)
            y, out = mod.step(xs, state=held, ctx=sub)
        if rank < size - 1:
            _send(tuple(out), rank + 1, group)
        fctx.saved = (xs, held, y, tuple(out), params)
        fctx.mod_rank = (rank, size, group)
        return y.detach()

    @staticmethod
    def backward(fctx: Any, gy: Tensor) -> tuple[Any, ...]:
        xs, held, y, out, params = fctx.saved
        rank, size, group = fctx.mod_rank
        g_out = _recv(out, rank + 1, group) if rank < size - 1 else tuple(torch.zeros_like(o) for o in out)
        wrt = [xs, *[h for h in held if h.requires_grad], *params]
        grads = torch.autograd.grad([y, *out], wrt, [gy, *g_out], allow_unused=True)
        g_x, rest = grads[0], grads[1:]
        n_held = sum(h.requires_grad for h in held)
        g_held, g_params = rest[:n_held], rest[n_held:]
        if rank > 0:  # the gradient of every incoming state tensor (zeros where none flows)
            it = iter(g_held)
            back = []
            for h in held:
                g = next(it) if h.requires_grad else None
                back.append(torch.zeros_like(h) if g is None else g)
            _send(tuple(back), rank - 1, group)
        return (None, None, None, g_x, *g_params)


def gather_sequence(t: Tensor, group: Any, dim: int = 2) -> Tensor:
    """Every rank's chunk of `t` along `dim`, in rank order: an all-gather written as an all-to-all
    of `size` copies (differentiable, and gloo runs it: its backward sums each chunk's gradients
    back to the rank that holds it)."""
    from torch.distributed.nn.functional import all_to_all_single

    size = dist.get_world_size(group)
    x = t.movedim(dim, 0).contiguous()
    n = x.shape[0]
    send = x.repeat(size, *([1] * (x.dim() - 1)))
    out = all_to_all_single(torch.empty_like(send), send, [n] * size, [n] * size, group=group)
    return out.movedim(0, dim)


def context_parallel(model: ArchModel, mesh: Any) -> None:
    """Make every state-passing mixer of `model` scan its rank's chunk from the previous rank's
    state, and self-attention attend from its chunk's queries to the whole sequence's keys and
    values, gathered from every rank (Llama 3's context parallelism: the ring's traffic, without
    its overlap; the ring itself is next) — each `forward` replaced on the instance."""
    group = mesh.get_group()
    modules = dict(model.op_modules())
    for node in model.graph.nodes.values():
        rule = node_parallel(model.graph, node)
        if node.id in modules and rule.context == "ring" and node.op in GATHERED:
            mod = modules[node.id]
            original = mod.forward

            def attend(x: Tensor, kv: Tensor | None = None, ctx: Context | None = None, _mod: nn.Module = mod,
                       _original: Any = original) -> Tensor:
                if kv is not None or ctx is None:  # cross-attention: its queries never meet each other
                    return _original(x, kv=kv, ctx=ctx)
                q, k, v, gate = _mod.project(x, x, ctx.positions, ctx.memo)
                k, v = gather_sequence(k, group), gather_sequence(v, group)
                keys = torch.arange(k.shape[2], device=x.device)
                return _mod.out(_mod._sdpa(q, k, v, ctx.positions, keys, None, False), gate)

            mod.forward = attend
        if node.id in modules and rule.context == "state":
            mod = modules[node.id]
            params = tuple(p for p in mod.parameters() if p.requires_grad)

            def forward(x: Tensor, ctx: Context | None = None, _mod: nn.Module = mod,
                        _params: tuple[Tensor, ...] = params) -> Tensor:
                sub = Context(ctx.positions, ctx.attention_mask, aux_losses=ctx.aux_losses) if ctx is not None \
                    else Context(torch.arange(x.shape[1], device=x.device))
                return _StatePassing.apply(_mod, sub, group, x, *_params)

            mod.forward = forward


def chunk(rank: int, size: int, ids: Tensor, labels: Tensor, causal: bool, ignore: int) -> tuple[Tensor, Tensor, Tensor]:
    """Rank `rank`'s chunk of the sequences: its token ids, its labels already shifted for a causal
    model (the label of a chunk's last token is the next chunk's first), and its positions."""
    t = ids.shape[1]
    if t % size:
        raise ValueError(f"a sequence of {t} tokens does not split into {size} equal chunks")
    if causal:
        labels = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], ignore)], dim=1)
    n = t // size
    part = slice(rank * n, (rank + 1) * n)
    return ids[:, part], labels[:, part], torch.arange(rank * n, (rank + 1) * n, device=ids.device)
