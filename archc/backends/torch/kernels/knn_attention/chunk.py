"""kNN-augmented attention over a whole sequence: local causal attention inside each segment
(blocks of the sequence, one SDPA), and per query the `topk` best keys of the earlier segments.

The search is exact. Eagerly (and inside `torch.compile`, which runs it as a graph break) it walks
the segments with the memory growing by one segment each time, by `torch.topk` over the memory so
far or a faiss inner-product index per (sequence, head) that the segment's keys are then added to —
Memorizing Transformers' memory. Under `torch.export` it is a `while_loop` over the query segments,
each one `torch.topk` over all keys with the not-yet-memory masked: the same values, the length
left symbolic. The memory is read without gradient (the paper's stop).
"""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.blocks import from_blocks, to_blocks
from archc.backends.torch.layers import sdpa
from archc.backends.torch.loops import exported_time_loop

NEG = float("-inf")


def _segment_of(positions: Tensor, segment: int) -> Tensor:
    return torch.div(positions, segment, rounding_mode="floor")


@torch.compiler.disable
def retrieve(q: Tensor, k: Tensor, segment: int, topk: int, valid: Tensor | None = None,
             index: str = "torch") -> tuple[Tensor, Tensor]:
    """Each query's `topk` memory keys (those of earlier segments): (indices [B, H, T, topk] into
    the keys, found [B, H, T, topk] bool — fewer than topk memories exist early on). q, k
    [B, H, T, hd]; valid [B, T] marks real tokens (padding is never retrieved)."""
    b, h, t, _ = q.shape
    if torch.compiler.is_exporting():
        return _exported(q, k, segment, topk, valid)
    if index == "torch" and t <= 4 * segment:
        return _masked_topk(q, k, torch.arange(t, device=q.device), segment, topk, valid)
    n = min(topk, t)
    if index == "faiss":
        return _faiss(q, k, segment, n, valid)
    idx = torch.zeros(b, h, t, n, dtype=torch.long, device=q.device)
    found = torch.zeros(b, h, t, n, dtype=torch.bool, device=q.device)
    for start in range(segment, t, segment):  # the memory so far: every token before this segment
        stop = min(start + segment, t)
        scores = q[:, :, start:stop] @ k[:, :, :start].transpose(-1, -2)
        if valid is not None:
            scores = scores.masked_fill(~valid[:, None, None, :start], NEG)
        best = scores.topk(min(n, start), dim=-1)
        idx[:, :, start:stop, :best.indices.shape[-1]] = best.indices
        found[:, :, start:stop, :best.indices.shape[-1]] = torch.isfinite(best.values)
    return idx, found


def _masked_topk(q: Tensor, k: Tensor, q_pos: Tensor, segment: int, topk: int,
                 valid: Tensor | None) -> tuple[Tensor, Tensor]:
    """`retrieve` for the queries at `q_pos` over every key, the keys outside their memory masked."""
    t = k.shape[2]
    allowed = _segment_of(torch.arange(t, device=q.device), segment)[None, :] < _segment_of(q_pos, segment)[:, None]
    scores = (q @ k.transpose(-1, -2)).masked_fill(~allowed, NEG)
    if valid is not None:
        scores = scores.masked_fill(~valid[:, None, None, :], NEG)
    # `topk` unreachable columns, so that there are always topk candidates (no min(topk, T), which
    # would fix the length in a traced graph)
    scores = torch.cat((scores, scores.new_full((*scores.shape[:-1], topk), NEG)), -1)
    best = scores.topk(topk, dim=-1)
    return best.indices.clamp(max=t - 1), torch.isfinite(best.values)


def _exported(q: Tensor, k: Tensor, segment: int, topk: int, valid: Tensor | None) -> tuple[Tensor, Tensor]:
    """`retrieve` under `torch.export`: a `while_loop` over the query segments, each searching
    every key with its not-yet-memory masked — memory O(segment · T), the segment count symbolic."""
    t = q.shape[2]
    qb = to_blocks(q, 2, segment)                                                # [B, H, n, S, hd]
    starts = (torch.arange(qb.shape[2], device=q.device) * segment)[None, None]  # [1, 1, n]: the loop's axis 2

    def one(xs: tuple[Tensor, Tensor], carry: tuple[Tensor, ...]) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, ...]]:
        q_seg, start = xs
        idx, found = _masked_topk(q_seg, k, start.reshape(()) + torch.arange(segment, device=q.device), segment, topk,
                                  valid)
        return (idx, found), (carry[0] + 1,)  # (a new value: while_loop refuses a carry passed through)

    shape = (*qb.shape[:4], topk)
    # (a one-element carry: the loop carries nothing, and `while_loop` wants a carried value)
    (idx, found), _ = exported_time_loop(one, (qb, starts), (q.new_zeros(()),),
                                         (q.new_zeros(shape, dtype=torch.long), q.new_zeros(shape, dtype=torch.bool)),
                                         dim=2)
    return from_blocks(idx, 2, t), from_blocks(found, 2, t)


def _faiss(q: Tensor, k: Tensor, segment: int, n: int, valid: Tensor | None) -> tuple[Tensor, Tensor]:
    """`retrieve` by faiss: an exact inner-product index (`IndexFlatIP`) per sequence and head,
    each segment searched before its keys are added."""
    import faiss

    b, h, t, _ = q.shape
    qs = q.detach().float().cpu().numpy()
    ks = k.detach().float().cpu().numpy()
    idx = torch.zeros(b, h, t, n, dtype=torch.long)
    found = torch.zeros(b, h, t, n, dtype=torch.bool)
    for bi in range(b):
        keep = None if valid is None else valid[bi].cpu().numpy()
        for hi in range(h):
            index = faiss.IndexFlatIP(q.shape[-1])
            ids: list[int] = []  # faiss's row → the key's position (padding is never added)
            for start in range(0, t, segment):
                stop = min(start + segment, t)
                if index.ntotal:
                    _, rows = index.search(qs[bi, hi, start:stop], min(n, index.ntotal))
                    positions = torch.as_tensor(ids)[torch.as_tensor(rows).clamp(min=0)]
                    idx[bi, hi, start:stop, :rows.shape[1]] = positions
                    found[bi, hi, start:stop, :rows.shape[1]] = torch.as_tensor(rows >= 0)
                new = [p for p in range(start, stop) if keep is None or keep[p]]
                if new:
                    index.add(ks[bi, hi, new])
                    ids.extend(new)
    return idx.to(q.device), found.to(q.device)


def rows(x: Tensor, idx: Tensor) -> Tensor:
    """x [B, H, T, hd] at the positions idx [B, H, Q, k] → [B, H, Q, k, hd], by one `index_select`
    on the flattened rows (a gather from x expanded over the queries would be materialized by
    onnxruntime: B·H·Q·T·hd)."""
    b, h, t, d = x.shape
    base = (torch.arange(b * h, device=x.device) * t).view(b, h, 1, 1)
    return x.reshape(b * h * t, d).index_select(0, (idx + base).reshape(-1)).view(*idx.shape, d)


def knn_attention(q: Tensor, k: Tensor, v: Tensor, gate: Tensor, segment: int, topk: int,
                  valid: Tensor | None = None, index: str = "torch") -> Tensor:
    """`naive_knn_attention`'s values: q, k, v [B, H, T, hd] (q and k normalized and scaled),
    gate [H]; valid [B, T] (padding neither attended nor retrieved). Returns [B, H, T, hd]."""
    t = q.shape[2]
    qb, kb, vb = (to_blocks(x, 2, segment) for x in (q, k, v))                  # [B, H, n, S, hd]
    causal = torch.ones(qb.shape[3], qb.shape[3], dtype=torch.bool, device=q.device).tril()
    mask = causal
    if valid is not None:
        ok = to_blocks(valid, 1, segment, value=False)                          # [B, n, S]
        mask = causal & ok[:, None, :, None, :]
        mask = mask | ~mask.any(-1, keepdim=True)  # a padded row with no key: anything finite, unused
    local = from_blocks(sdpa(qb, kb, vb, attn_mask=mask, scale=1.0), 2, t)
    with torch.no_grad():
        idx, found = retrieve(q.detach(), k.detach(), segment, topk, valid, index)
    k_mem, v_mem = rows(k.detach(), idx), rows(v.detach(), idx)                  # [B, H, T, topk, hd]
    scores = (k_mem @ q[..., None])[..., 0].masked_fill(~found, NEG)
    weights = torch.nan_to_num(scores.softmax(-1), nan=0.0)
    memory = (weights[..., None] * v_mem).sum(-2)
    g = torch.sigmoid(gate)[None, :, None, None] * found.any(-1, keepdim=True).to(q.dtype)
    return local + g * (memory - local)



