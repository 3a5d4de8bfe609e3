"""Linear recurrences over a sequence, computed chunkwise at matrix speed and in export-safe form.

Every linear-time mixer of the catalog is a recurrence h_t = a_t ⊙ h_{t−1} + u_t with a read-out.
Written as a Python loop over t it is slow on the CPU (one tiny kernel per token) and, worse, it
makes `torch.export` fix the sequence length to the traced one (the loop's trip count is baked in).
The functions here never loop over the length: they cut the sequence into fixed-size chunks
(`blocks.to_blocks`, which keeps T symbolic) and

* inside a chunk either loop over the C positions *vectorized across all chunks at once* (a static
  trip count C) or use the chunk's C×C decay matrix (the "dual", attention-like form);
* across chunks combine the chunk summaries with a log-step (Hillis–Steele) scan whose step count
  is a constant in traced programs, so the number of chunks stays a symbolic tensor dimension.

Decays are passed as logarithms (log a ≤ 0) and combined with `segsum`, which sums log-decays
instead of dividing cumulative products, so long products underflow to exactly 0 instead of
producing 0/0. All arithmetic is fp32.
"""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.blocks import from_blocks, to_blocks
from archc.backends.torch.module import tracing

#: Positions per chunk of the scans. 32 and 64 are equally fast for Mamba's scan on a CPU from
#: 512 tokens on (tools/bench_ssm.py); 32 wastes less on short inputs and halves the traced graph.
CHUNK = 32
#: Steps of `linear_scan` in traced programs: up to 2^20 chunks (2^25 tokens with chunks of 32).
MAX_SCAN_STEPS = 20


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


def _shift(x: Tensor, by: int = 1) -> Tensor:
    """x along dim 1 moved `by` steps later, zeros in front: x'[i] = x[i − by] (0 for i < by).

    An index_select rather than pad-and-slice: it costs O(n) for any shift and keeps the length
    symbolic (slicing an element off would create a length n − 1 that the exporter specializes
    when it asks whether it is 1)."""
    n = x.shape[1]
    src = torch.arange(n, device=x.device) - by
    valid = (src >= 0).view((1, n) + (1,) * (x.dim() - 2))
    return x.index_select(1, src.clamp(min=0)) * valid


def linear_scan(log_a: Tensor, u: Tensor, h0: Tensor | None = None) -> Tensor:
    """All states of h_i = exp(log_a_i) ⊙ h_{i−1} + u_i along dim 1, h_{−1} = h0 (zeros if None).

    log_a [B, n, *F'] broadcasts against u [B, n, *F] (a scalar decay per head, or one per
    element); h0 [B, *F]. Returns h [B, n, *F] (h[:, -1] is the final state).

    Used on the short sequences of chunk summaries (n = T / chunk). Hillis–Steele's log-step scan
    of the affine maps h ↦ a·h + u: after step k every position has composed the 2^k maps before
    it, so ⌈log2 n⌉ steps of O(n·F) finish. The step count is a Python int — ⌈log2 n⌉ in eager
    mode, `MAX_SCAN_STEPS` under tracing (surplus steps add zeros) — so no loop depends on n."""
    n = u.shape[1]
    steps = MAX_SCAN_STEPS if tracing() else max(1, (n - 1).bit_length())
    torch._check(n <= 2 ** MAX_SCAN_STEPS, lambda: f"linear_scan supports {2 ** MAX_SCAN_STEPS} chunks")
    la, h = log_a, u
    for k in range(steps):
        h = torch.addcmul(h, la.exp(), _shift(h, 2 ** k))
        la = la + _shift(la, 2 ** k)
    if h0 is not None:
        h = torch.addcmul(h, la.exp(), h0[:, None])  # la is now the log-decay from the start
    return h


def selective_scan(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None = None,
                   chunk: int = CHUNK) -> tuple[Tensor, Tensor]:
    """Mamba's selective scan (Gu & Dao 2023, Alg. 2) without the D skip and the gate:

        h_t = exp(Δ_t ⊗ A) ⊙ h_{t−1} + (Δ_t u_t) ⊗ B_t,    y_t = h_t · C_t

    u, dt [B, T, E]; A [E, N]; B, C [B, T, N]; h0 [B, E, N]. Returns (y [B, T, E], h_T [B, E, N]).

    The decay differs per (channel, state) pair, so there is no C×C matrix form; instead two passes
    over the positions of every chunk at once: the first finds each chunk's end state from zero,
    `linear_scan` turns those into each chunk's true start state, the second reruns the chunks from
    their start states and reads y out. Each step touches one [B, chunks, E, N] slab that stays in
    cache; the discretized exp(Δ⊗A) and Δu⊗B are recomputed per step rather than materialized as
    [B, T, E, N] tensors (measured faster: memory traffic, not arithmetic, bounds this on a CPU)."""
    t = u.shape[1]
    u, dt, B, C, A = wide(u), wide(dt), wide(B), wide(C), wide(A)

    def steps(x: Tensor) -> tuple[Tensor, ...]:
        """[B, T, *F] -> `chunk` contiguous slabs [B, n, *F], one per position inside the chunks
        (padding: Δ = 0, so padded steps keep the state). Contiguous slabs keep each step's
        kernels streaming and the traced graph small (no per-step views)."""
        return to_blocks(x, 1, chunk).movedim(2, 0).contiguous().unbind(0)

    dts, dus = steps(dt[..., None]), steps((dt * u)[..., None])  # [B, n, E, 1]
    bs, cs = steps(B[:, :, None, :]), steps(C[..., None])  # [B, n, 1, N], [B, n, N, 1]

    def advance(h: Tensor, i: int) -> Tensor:
        return torch.addcmul(dus[i] * bs[i], (dts[i] * A).exp(), h)

    h = u.new_zeros((*dus[0].shape[:-1], A.shape[1]))
    for i in range(chunk):
        h = advance(h, i)
    # each chunk's start state; the last chunk is all padding, so its start is the final state
    total = sum(dts[1:], dts[0])
    h = linear_scan(_shift(total * A), _shift(h), None if h0 is None else wide(h0))
    final = h[:, -1]
    ys = []
    for i in range(chunk):
        h = advance(h, i)
        ys.append(h @ cs[i])
    return from_blocks(torch.stack(ys, dim=2)[..., 0], 1, t), final


def chunked_decay_attention(q: Tensor, k: Tensor, v: Tensor, log_a: Tensor, state: Tensor | None = None,
                            chunk: int = CHUNK) -> tuple[Tensor, Tensor]:
    """The scalar-decay linear recurrence of Mamba-2 (SSD), RetNet and gated linear attention:

        S_t = a_t S_{t−1} + k_tᵀ v_t,    y_t = q_t S_t

    q, k [B, H, T, K]; v [B, H, T, V]; log_a [B, H, T] (log a_t ≤ 0); state [B, H, K, V] (S_{−1},
    zeros if None). Returns (y [B, H, T, V], S_T [B, H, K, V]).

    Inside a chunk the C×C matrix (q kᵀ ⊙ exp(segsum(log a))) v — the attention-like "dual" form;
    each chunk's own contribution to the state, Σ_j exp(Σ_{r>j} log a_r) k_jᵀ v_j, is one matmul;
    `linear_scan` combines the chunk states into start states; q exp(cumsum log a) reads them out
    (Dao & Gu 2024, Listing 1, with the cross-chunk step made hierarchical)."""
    t = q.shape[2]
    q, k, v, log_a = wide(q), wide(k), wide(v), wide(log_a)
    qc, kc, vc = (to_blocks(x, 2, chunk) for x in (q, k, v))  # [B, H, n, C, ·]
    la = to_blocks(log_a, 2, chunk)  # [B, H, n, C]; padding: decay 1 (log 0), k = 0
    cum = la.cumsum(dim=-1)
    scores = (qc @ kc.transpose(-1, -2)) * segsum(la).exp()
    intra = scores @ vc
    to_end = (cum[..., -1:] - cum).exp()  # decay from each position to its chunk's end
    own = (kc * to_end[..., None]).transpose(-1, -2) @ vc  # [B, H, n, K, V]
    h0 = None if state is None else wide(state)
    # each chunk's start state [B, n, H, K, V]; the last chunk is all padding: its start is final
    starts = linear_scan(_shift(cum[..., -1].transpose(1, 2)[..., None, None]), _shift(own.transpose(1, 2)), h0)
    y = intra + (qc * cum.exp()[..., None]) @ starts.transpose(1, 2)
    return from_blocks(y, 2, t), starts[:, -1]
