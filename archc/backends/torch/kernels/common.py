"""What the chunked kernels share: linear recurrences over a sequence, chunkwise at matrix speed
and in export-safe form.

Every linear-time mixer of the catalog is a recurrence h_t = a_t ⊙ h_{t−1} + u_t with a read-out.
Written as a Python loop over t it is slow on the CPU (one tiny kernel per token) and, worse, it
makes `torch.export` fix the sequence length to the traced one (the loop's trip count is baked in).
The functions here never loop over the length: they cut the sequence into fixed-size chunks
(`blocks.to_blocks`, which keeps T symbolic) and

* inside a chunk either loop over the C positions *vectorized across all chunks at once* (a static
  trip count C) or use the chunk's C×C decay matrix (the "dual", attention-like form);
* across chunks combine the chunk summaries: in eager mode by a pass over them (T/chunk small
  steps), in traced programs by a log-step (Hillis–Steele) scan whose step count is a constant,
  so the number of chunks stays a symbolic tensor dimension.

Decays are passed as logarithms (log a ≤ 0) and combined with `segsum`, which sums log-decays
instead of dividing cumulative products, so long products underflow to exactly 0 instead of
producing 0/0. All arithmetic is fp32.
"""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.context import tracing
from archc.backends.torch.loops import exported_time_loop

#: Positions per chunk of the scans under tracing (and of `chunked_decay_attention`'s callers that
#: pass none): short enough that the unrolled chunk keeps exported graphs small. In eager mode
#: `selective_scan` picks its chunk by length (`selective_chunk`). Chunk sweeps of the scan alone
#: were measured ad hoc on this CPU (figures in `selective_chunk`'s docstring), not by a tool.
CHUNK = 32


def wide(x: Tensor) -> Tensor:
    """x in fp32 at least (fp64 stays fp64, for gradcheck): the states and sums of a long scan
    lose too much in half precision."""
    return x if x.dtype == torch.float64 else x.float()


def segsum(x: Tensor) -> Tensor:
    """[..., n] -> [..., n, n]: out[i, j] = x[j+1] + … + x[i] for j ≤ i, −inf above the diagonal.

    exp(segsum(log a))[i, j] is the decay a_{j+1}·…·a_i from step j to step i. The sums are
    taken directly (cumulative sum of a masked copy), not as differences of one cumulative sum,
    which would cancel catastrophically once the cumulative log-decay is large."""
    n = x.shape[-1]
    below = torch.ones(n, n, dtype=torch.bool, device=x.device).tril(-1)
    sums = x[..., None].expand(*x.shape, n).masked_fill(~below, 0.0).cumsum(dim=-2)
    return sums.masked_fill(~torch.ones(n, n, dtype=torch.bool, device=x.device).tril(), float("-inf"))


def shift(x: Tensor, by: int = 1, fill: float = 0.0) -> Tensor:
    """x along dim 1 moved `by` steps later, `fill` in front: x'[i] = x[i − by] (fill for i < by).

    An index_select rather than pad-and-slice: it costs O(n) for any shift and keeps the length
    symbolic (slicing an element off would create a length n − 1 that the exporter specializes
    when it asks whether it is 1)."""
    n = x.shape[1]
    src = torch.arange(n, device=x.device) - by
    valid = (src >= 0).view((1, n) + (1,) * (x.dim() - 2))
    moved = x.index_select(1, src.clamp(min=0))
    return moved * valid if fill == 0.0 else torch.where(valid, moved, fill)


def linear_scan(log_a: Tensor, u: Tensor, h0: Tensor | None = None) -> Tensor:
    """All states of h_i = exp(log_a_i) ⊙ h_{i−1} + u_i along dim 1, h_{−1} = h0 (zeros if None).

    log_a [B, n, *F'] broadcasts against u [B, n, *F] (a scalar decay per head, or one per
    element); h0 [B, *F]. Returns h [B, n, *F] (h[:, -1] is the final state).

    Used on the short sequences of chunk summaries (n = T / chunk): O(n·F) work in n small
    steps, a plain Python loop in eager mode and one `while_loop` over the symbolic n when traced
    (`exported_time_loop`; an ONNX `Loop`). The traced form was Hillis–Steele's log-step scan,
    20 unrolled steps of O(n·F): log n times the work, and the largest part of the exported
    graphs of Mamba, Mamba-2, RetNet and RWKV-6 (their ONNX export took minutes)."""
    n = u.shape[1]
    if not tracing():
        decay = log_a.exp()
        h = torch.zeros_like(u[:, 0]) if h0 is None else h0.to(u.dtype)
        out = []
        for i in range(n):
            h = torch.addcmul(u[:, i], decay[:, i], h)
            out.append(h)
        return torch.stack(out, dim=1)
    def one(x: tuple[Tensor, Tensor], carry: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        h = torch.addcmul(x[1], x[0].exp(), carry[0]).contiguous()
        return h, (h,)

    # while_loop wants its carry's strides to stay put (u is often a transposed view): contiguous
    start = u.new_zeros(u[:, 0].shape) if h0 is None else h0.to(u.dtype).contiguous()
    return exported_time_loop(one, (log_a, u), (start,), u.new_zeros(u.shape), dim=1)[0]


#: log 0 for the max-stabilized WKV states: finite, so max() and differences never meet inf − inf
#: (the value the RWKV reference kernels use).
NEG = -1e38

#: A max-stabilized state (v, w, m) standing for (v·e^m, w·e^m): WKV's (num, den, m), mLSTM's
#: (C, n, m).
StableState = tuple[Tensor, Tensor, Tensor]


def merge(a: StableState, decay: Tensor, b: StableState) -> StableState:
    """State a decayed by exp(decay), plus state b; states are (num, den, m) standing for
    (num·e^m, den·e^m), so no exponent is ever taken of a large positive number."""
    m = torch.maximum(a[2] + decay, b[2])
    ea, eb = (a[2] + decay - m).exp(), (b[2] - m).exp()
    return ea * a[0] + eb * b[0], ea * a[1] + eb * b[1], m


def stabilized_scan(own: StableState, decay: Tensor, h0: StableState | None) -> StableState:
    """Every chunk's start state from the chunks' own states (v, w, m) [B, n, …] (each standing for
    (v·e^m, w·e^m), as in `merge`) and their total log-decays [B, n, …]; h0 the state before the
    first chunk (none if None). A log-step scan under `merge` of the states shifted by one chunk:
    the max-stabilized counterpart of `linear_scan`, for recurrences with exponential inputs."""
    if tracing():
        return _stabilized_loop(own, decay, h0)
    decay = shift(decay)
    v, w, m = shift(own[0]), shift(own[1]), shift(own[2], fill=NEG)
    steps = max(1, (v.shape[1] - 1).bit_length())
    for j in range(steps):
        by = 2 ** j
        v, w, m = merge((shift(v, by), shift(w, by), shift(m, by, NEG)), decay, (v, w, m))
        decay = decay + shift(decay, by)
    if h0 is not None:  # decay is now the log-decay from the start to each chunk
        v, w, m = merge(tuple(wide(s)[:, None] for s in h0), decay, (v, w, m))  # type: ignore[arg-type]
    return v, w, m


def _stabilized_loop(own: StableState, decay: Tensor, h0: StableState | None) -> StableState:
    """`stabilized_scan` under tracing: the chunks' start states one chunk after the other, as
    one `while_loop` (an ONNX `Loop`) whose body is traced once — the unrolled log-step form was
    most of RWKV-4's and mLSTM's exported graphs."""
    # while_loop wants its carry's strides to stay put: every carried tensor contiguous
    v0, w0, m0 = (s[:, 0] for s in own)
    start = (v0.new_zeros(v0.shape), w0.new_zeros(w0.shape), m0.new_full(m0.shape, NEG)) if h0 is None else \
        tuple(wide(s).to(v0.dtype).contiguous() for s in h0)

    def one(x: tuple[Tensor, ...], s: tuple[Tensor, ...]) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        v, w, m, d = x
        return s, tuple(t.contiguous() for t in merge(s, d, (v, w, m)))

    outs = tuple(t.new_zeros(t.shape) for t in own)
    starts, _ = exported_time_loop(one, (*own, decay), start, outs, dim=1)
    return starts
