"""Context parallelism: each rank holds a contiguous chunk of every sequence; each recurrent mixer
scans its chunk from the state the previous rank hands it, and self-attention runs as a ring.

The mixers' `step` already computes a chunk from a given state (chunked prefill: step equals the
forward for every chunking, tested for every mixer), so a rank's chunk is exactly what the whole
sequence computes there once its incoming state is right. The hand-off is sequential — rank r
waits for rank r − 1's final state, then sends its own to r + 1 — and so is its backward: the
last rank differentiates its chunk first and sends the gradient of its incoming state back.
`_StatePassing` is that autograd function, one node per layer and rank, so every rank meets the
layers' point-to-point messages in the same order (forward, then backward in reverse).

Ops that mix no positions run on their chunk as they are. Self-attention runs as ring attention
(`_RingAttention`): the chunks' keys and values travel round the ranks, each rank attends from its
queries to the block it holds while the next is in flight, and merges the blocks by their
log-sum-exps; backward goes round again with the blocks' gradients. Ops without a
context-parallel form are refused before launching (`unsupported`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from archc.backends.torch.context import Context
from archc.backends.torch.model import ArchModel
from archc.backends.torch.ops.attention import expand_kv
from archc.passes.facts import node_parallel

#: ops whose `ring` context runs here (`_RingAttention`)
RING = ("attention",)


def unsupported(graph: Any) -> str | None:
    """The first node a split of the sequence cannot run, with why (None: all run)."""
    for node in graph.nodes.values():
        rule = node_parallel(graph, node)
        if rule.context == "ring" and node.op not in RING:
            return f"`{node.id}` ({node.op}): its ring attention is planned, not run yet"
        if rule.context == "none":
            return f"`{node.id}` ({node.op}): {rule.why_context or 'no context-parallel form'}"
        if rule.context == "ring" and node.params.get("dropout"):
            return (f"`{node.id}` ({node.op}): attention dropout under ring attention (each block's mask would "
                    "have to be replayed in backward)")
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


def _shift(tensors: tuple[Tensor, ...], group: Any) -> tuple[tuple[Tensor, ...], list[Any]]:
    """Start sending `tensors` to the next rank of the ring and receiving the previous rank's:
    (the buffers they arrive in, the works to wait for) — the caller computes meanwhile."""
    rank, size = dist.get_rank(group), dist.get_world_size(group)
    bufs = tuple(torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in tensors)
    ops = [dist.P2POp(dist.isend, t.contiguous(), group=group, group_peer=(rank + 1) % size) for t in tensors]
    ops += [dist.P2POp(dist.irecv, b, group=group, group_peer=(rank - 1) % size) for b in bufs]
    return bufs, dist.batch_isend_irecv(ops)


def _wait(works: list[Any]) -> None:
    for w in works:
        w.wait()


def _scores(mod: nn.Module, q: Tensor, k: Tensor, q_pos: Tensor, k_pos: Tensor) -> Tensor:
    """The attention logits of `q` against one block of keys, as the op's `_sdpa` forms them:
    cap(q·kᵀ·scale) + position bias, −∞ where the causal / window pattern forbids (fp32)."""
    k = expand_kv(k, q.shape[1] // k.shape[1])
    s = torch.matmul(q, k.transpose(-1, -2)).float() * (q.shape[-1] ** -0.5 if mod.scale is None else mod.scale)
    if mod.softcap is not None:
        s = torch.tanh(s / mod.softcap) * mod.softcap
    bias = mod.position_bias(q_pos, k_pos)
    if bias is not None:
        s = s + bias.float()
    allowed = mod._allowed(q_pos, k_pos)
    return s if allowed is None else s.masked_fill(~allowed, float("-inf"))


def _fused(mod: nn.Module, q: Tensor) -> bool:
    """Whether a block runs on PyTorch's fused CPU attention kernel, which returns the block's
    log-sum-exp and differentiates from the merged output and log-sum-exp (ring flash attention's
    recipe): on CPU, for logits it forms — no softcap, no learned position bias (ALiBi is a fixed
    additive mask). Otherwise the block's logits are written out (`_scores`)."""
    return q.device.type == "cpu" and mod.softcap is None and mod.relative_bias is None


def _block_mask(mod: nn.Module, q_pos: Tensor, k_pos: Tensor) -> tuple[Tensor | None, bool, Tensor | None]:
    """(an additive fp32 mask for the fused kernel or None, is_causal, the queries that see no key of
    the block or None): the causal diagonal block of plain causal attention is the kernel's own
    `is_causal`; a window or ALiBi is a mask of bias and −∞."""
    bias = mod.position_bias(q_pos, k_pos)
    allowed = mod._allowed(q_pos, k_pos)
    if bias is None and allowed is not None and not mod.window and bool(torch.equal(q_pos, k_pos)):
        return None, True, None
    if bias is None and (allowed is None or bool(allowed.all())):
        return None, False, None
    mask = (bias.float() if bias is not None else torch.zeros(allowed.shape, device=q_pos.device))
    if bias is not None and mask.dim() == 3:
        mask = mask[None]
    if allowed is None:
        return mask, False, None
    mask = mask.masked_fill(~allowed, float("-inf"))
    return mask, False, ~allowed.any(-1)


def _block_forward(mod: nn.Module, q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor, k_pos: Tensor
                   ) -> tuple[Tensor, Tensor] | None:
    """(the block's attention output in fp32, its log-sum-exp per query) — None when the pattern
    forbids every key of the block."""
    groups = q.shape[1] // k.shape[1]
    if _fused(mod, q):
        allowed = mod._allowed(q_pos, k_pos)
        if allowed is not None and not bool(allowed.any()):
            return None
        mask, causal, dead = _block_mask(mod, q_pos, k_pos)
        o, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, expand_kv(k, groups), expand_kv(v, groups), 0.0, causal, attn_mask=mask, scale=mod.scale)
        if dead is not None:  # the kernel gives 0, not −∞, for a query that sees no key
            lse = lse.masked_fill(dead, float("-inf"))
        return o.float(), lse
    s = _scores(mod, q, k, q_pos, k_pos)
    if not bool(torch.isfinite(s).any()):
        return None
    lse = torch.logsumexp(s, dim=-1)
    return torch.matmul(torch.exp(s - lse[..., None].clamp_min(-1e30)), expand_kv(v, groups).float()), lse


def _block_backward(mod: nn.Module, q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor, k_pos: Tensor, out: Tensor,
                    lse: Tensor, d_out: Tensor, params: tuple[Tensor, ...]
                    ) -> tuple[Tensor, Tensor, Tensor, list[Tensor | None]] | None:
    """The block's share of the gradients of q, k, v and the op's parameters, from the merged output
    and log-sum-exp — None when the pattern forbids every key of the block."""
    groups = q.shape[1] // k.shape[1]

    def fold(g: Tensor) -> Tensor:  # a key/value head's gradient: the sum over the query heads it serves
        return g if groups == 1 else g.unflatten(1, (k.shape[1], groups)).sum(2)

    if _fused(mod, q):
        allowed = mod._allowed(q_pos, k_pos)
        if allowed is not None and not bool(allowed.any()):
            return None
        mask, causal, _ = _block_mask(mod, q_pos, k_pos)
        g_q, g_k, g_v = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            d_out.to(q.dtype), q, expand_kv(k, groups), expand_kv(v, groups), out.to(q.dtype), lse, 0.0, causal,
            attn_mask=mask, scale=mod.scale)
        return g_q, fold(g_k), fold(g_v), [None] * len(params)
    with torch.enable_grad():
        qq, kk, vv = q.detach().requires_grad_(), k.detach().requires_grad_(), v.detach().requires_grad_()
        s = _scores(mod, qq, kk, q_pos, k_pos)
        if not bool(torch.isfinite(s).any()):
            return None
        prob = torch.exp(s - lse[..., None])
        rows = (d_out * out.detach()).sum(-1)  # D = rowsum(dO ∘ O): the softmax's normalization
        surrogate = (d_out * torch.matmul(prob, expand_kv(vv, groups).float())).sum() - (rows[..., None] * prob).sum()
        live = [p for p in params if p.requires_grad]
        grads = torch.autograd.grad(surrogate, [qq, kk, vv, *live], allow_unused=True)
    it = iter(grads[3:])
    g_params = [next(it) if p.requires_grad else None for p in params]
    return grads[0], _or_zeros(grads[1], kk), _or_zeros(grads[2], vv), g_params


class _RingAttention(torch.autograd.Function):
    """Ring attention (Liu et al., 2023) on contiguous chunks: each rank keeps its queries and
    passes its keys and values around the ring; at each of the `size` steps it attends to the
    block it holds — while the next block is already in flight — and merges the block's output
    into its own by their log-sum-exps (the online softmax of flash attention). Blocks the
    causal or window pattern forbids entirely are skipped. Backward goes round the ring again: each
    block's keys and values travel with the gradients accumulated for them, which arrive home
    after the last step; a block's gradients come from the merged output and log-sum-exp (flash
    attention's backward: the fused kernel's, or the block's logits recomputed under autograd, so
    that a learned position bias gets its gradient)."""

    @staticmethod
    def forward(fctx: Any, mod: nn.Module, group: Any, q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor,
                *params: Tensor) -> Tensor:
        rank, size = dist.get_rank(group), dist.get_world_size(group)
        n = k.shape[2]
        out = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        lse = torch.full(q.shape[:-1], float("-inf"), device=q.device)
        held, works = (k, v), []
        for i in range(size):
            if i < size - 1:
                nxt, works = _shift(held, group)
            j = (rank - i) % size
            block = _block_forward(mod, q, held[0], held[1], q_pos, torch.arange(j * n, (j + 1) * n, device=q.device))
            if block is not None:
                o, block_lse = block
                new = torch.logaddexp(lse, block_lse)
                alive = new > float("-inf")
                keep = torch.where(alive, torch.exp(lse - new), torch.zeros_like(new))
                take = torch.where(alive, torch.exp(block_lse - new), torch.zeros_like(new))
                out = out * keep[..., None] + o * take[..., None]
                lse = new
            if i < size - 1:
                _wait(works)
                held = nxt
        fctx.save_for_backward(q, k, v, q_pos, out, lse)
        fctx.mod, fctx.group, fctx.params = mod, group, params
        return out.to(q.dtype)

    @staticmethod
    def backward(fctx: Any, g_out: Tensor) -> tuple[Any, ...]:
        q, k, v, q_pos, out, lse = fctx.saved_tensors
        out = out.detach()  # in fp32 the output itself: no graph through it
        mod, group, params = fctx.mod, fctx.group, fctx.params
        rank, size = dist.get_rank(group), dist.get_world_size(group)
        n = k.shape[2]
        d_out = g_out.float()
        g_q = torch.zeros_like(q)
        g_params: list[Tensor | None] = [None] * len(params)
        held = (k, v, torch.zeros_like(k), torch.zeros_like(v))
        for i in range(size):
            j = (rank - i) % size
            k_pos = torch.arange(j * n, (j + 1) * n, device=q.device)
            grads = _block_backward(mod, q, held[0], held[1], q_pos, k_pos, out, lse, d_out, params)
            if grads is not None:
                g_q = g_q + grads[0]
                held = (held[0], held[1], held[2] + grads[1], held[3] + grads[2])
                for idx, g in enumerate(grads[3]):
                    if g is not None:
                        g_params[idx] = g if g_params[idx] is None else g_params[idx] + g
            # the keys and values go on with their gradients; after the last step only the gradients,
            # which arrive at the rank that owns the block
            moving = held if i < size - 1 else held[2:]
            arrived, works = _shift(moving, group)
            _wait(works)
            held = arrived if i < size - 1 else (None, None, *arrived)
        return (None, None, g_q, held[2], held[3], None, *g_params)


def _or_zeros(g: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if g is None else g


def context_parallel(model: ArchModel, mesh: Any) -> None:
    """Make every state-passing mixer of `model` scan its rank's chunk from the previous rank's
    state, and self-attention run as ring attention over the ranks' chunks — each `forward`
    replaced on the instance."""
    group = mesh.get_group()
    modules = dict(model.op_modules())
    for node in model.graph.nodes.values():
        rule = node_parallel(model.graph, node)
        if node.id in modules and rule.context == "ring" and node.op in RING:
            mod = modules[node.id]
            original = mod.forward

            def attend(x: Tensor, kv: Tensor | None = None, ctx: Context | None = None, _mod: nn.Module = mod,
                       _original: Any = original) -> Tensor:
                if kv is not None or ctx is None:  # cross-attention: its queries never meet each other
                    return _original(x, kv=kv, ctx=ctx)
                q, k, v, gate = _mod.project(x, x, ctx.positions, ctx.memo)
                params = tuple(p for p in _mod.parameters() if p.requires_grad)
                return _mod.out(_RingAttention.apply(_mod, group, q, k, v, ctx.positions, *params), gate)

            mod.forward = attend
        if node.id in modules and rule.context == "state":
            mod = modules[node.id]

            def forward(x: Tensor, ctx: Context | None = None, _mod: nn.Module = mod) -> Tensor:
                sub = Context(ctx.positions, ctx.attention_mask, aux_losses=ctx.aux_losses) if ctx is not None \
                    else Context(torch.arange(x.shape[1], device=x.device))
                # looked up now: FSDP, applied later, replaces the parameters (and unshards them for forward)
                params = tuple(p for p in _mod.parameters() if p.requires_grad)
                return _StatePassing.apply(_mod, sub, group, x, *params)

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
