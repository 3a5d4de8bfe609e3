"""Linear recurrences over a sequence, computed chunkwise at matrix speed and in export-safe form.

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

from archc.backends.torch.blocks import from_blocks, to_blocks
from archc.backends.torch.module import tracing

#: Positions per chunk of the scans under tracing (and of `chunked_decay_attention`'s callers that
#: pass none): short enough that the unrolled chunk keeps exported graphs small. In eager mode
#: `selective_scan` picks its chunk by length (`selective_chunk`). Chunk sweeps of the scan alone
#: were measured ad hoc on this CPU (figures in `selective_chunk`'s docstring), not by a tool.
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


def _shift(x: Tensor, by: int = 1, fill: float = 0.0) -> Tensor:
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

    Used on the short sequences of chunk summaries (n = T / chunk). In eager mode a plain pass
    over the n chunks: O(n·F) work in n small steps. Traced, Hillis–Steele's log-step scan of the
    affine maps h ↦ a·h + u: after step k every position has composed the 2^k maps before it, so
    `MAX_SCAN_STEPS` steps of O(n·F) finish for any n (surplus steps add zeros) and no loop's trip
    count depends on n. (The log-step form does log n times the work: at 16k tokens Mamba-2's
    [H, P, N] chunk states made it the slowest part of the layer.)"""
    n = u.shape[1]
    if not tracing():
        decay = log_a.exp()
        h = torch.zeros_like(u[:, 0]) if h0 is None else h0.to(u.dtype)
        out = []
        for i in range(n):
            h = torch.addcmul(u[:, i], decay[:, i], h)
            out.append(h)
        return torch.stack(out, dim=1)
    steps = MAX_SCAN_STEPS
    torch._check(n <= 2 ** MAX_SCAN_STEPS, lambda: f"linear_scan supports {2 ** MAX_SCAN_STEPS} chunks")
    la, h = log_a, u
    for k in range(steps):
        h = torch.addcmul(h, la.exp(), _shift(h, 2 ** k))
        la = la + _shift(la, 2 ** k)
    if h0 is not None:
        h = torch.addcmul(h, la.exp(), h0[:, None])  # la is now the log-decay from the start
    return h


def selective_chunk(t: int) -> int:
    """The chunk length of `selective_scan` for T tokens: in eager mode about T/32 (a power of
    two in 32 … 256), so each step's [B, T/chunk, E, N] slab stays near 1 MB and in cache
    (measured at E·N = 8192: 0.45 → 0.21 s at 8192 tokens, 0.89 → 0.42 s at 16384, against a
    fixed 32); `CHUNK` under tracing, where the chunk is unrolled into the graph."""
    if tracing():
        return CHUNK
    return min(256, max(CHUNK, 1 << max(0, (t // 32 - 1).bit_length())))


@torch.compiler.disable
def selective_scan(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None = None,
                   chunk: int | None = None) -> tuple[Tensor, Tensor]:
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
    chunk = chunk or selective_chunk(t)
    u, dt, B, C, A = wide(u), wide(dt), wide(B), wide(C), wide(A)

    def steps(x: Tensor) -> tuple[Tensor, ...]:
        """[B, T, *F] -> `chunk` contiguous slabs [B, n, *F], one per position inside the chunks
        (padding: Δ = 0, so padded steps keep the state). Contiguous slabs keep each step's
        kernels streaming and the traced graph small (no per-step views)."""
        return to_blocks(x, 1, chunk).movedim(2, 0).contiguous().unbind(0)

    dts, dus = steps(dt[..., None]), steps((dt * u)[..., None])  # [B, n, E, 1]
    bs, cs = steps(B[:, :, None, :]), steps(C)  # [B, n, 1, N], [B, n, N]

    in_place = not (torch.is_grad_enabled() or tracing())
    h = u.new_zeros((*dus[0].shape[:-1], A.shape[1]))
    decay = torch.empty_like(h) if in_place else None

    def advance(h: Tensor, i: int) -> Tensor:
        if decay is not None:  # inference: no new [B, n, E, N] buffer per step (a fresh multi-MB
            # allocation per step is page-faulted in: measured 0.7 ms vs 0.1 ms in place at 16k)
            return h.mul_(torch.mul(dts[i], A, out=decay).exp_()).addcmul_(dus[i], bs[i])
        return torch.addcmul(dus[i] * bs[i], (dts[i] * A).exp(), h)

    for i in range(chunk):
        h = advance(h, i)
    # each chunk's start state; the last chunk is all padding, so its start is the final state
    total = sum(dts[1:], dts[0])
    h = linear_scan(_shift(total * A), _shift(h), None if h0 is None else wide(h0))
    final = h[:, -1]
    h = h.clone() if in_place else h  # `final` is a view of the start states
    ys = []
    for i in range(chunk):
        h = advance(h, i)
        ys.append(torch.einsum("bcen,bcn->bce", h, cs[i]))  # faster than bmm with N-long rows
    return from_blocks(torch.stack(ys, dim=2), 1, t), final


@torch.compiler.disable
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


#: log 0 for the max-stabilized WKV states: finite, so max() and differences never meet inf − inf
#: (the value the RWKV reference kernels use).
NEG = -1e38

#: A max-stabilized state (v, w, m) standing for (v·e^m, w·e^m): WKV's (num, den, m), mLSTM's
#: (C, n, m).
StableState = tuple[Tensor, Tensor, Tensor]


def _merge(a: StableState, decay: Tensor, b: StableState) -> StableState:
    """State a decayed by exp(decay), plus state b; states are (num, den, m) standing for
    (num·e^m, den·e^m), so no exponent is ever taken of a large positive number."""
    m = torch.maximum(a[2] + decay, b[2])
    ea, eb = (a[2] + decay - m).exp(), (b[2] - m).exp()
    return ea * a[0] + eb * b[0], ea * a[1] + eb * b[1], m


def _stabilized_scan(own: StableState, decay: Tensor, h0: StableState | None) -> StableState:
    """Every chunk's start state from the chunks' own states (v, w, m) [B, n, …] (each standing for
    (v·e^m, w·e^m), as in `_merge`) and their total log-decays [B, n, …]; h0 the state before the
    first chunk (none if None). A log-step scan under `_merge` of the states shifted by one chunk:
    the max-stabilized counterpart of `linear_scan`, for recurrences with exponential inputs."""
    decay = _shift(decay)
    v, w, m = _shift(own[0]), _shift(own[1]), _shift(own[2], fill=NEG)
    steps = MAX_SCAN_STEPS if tracing() else max(1, (v.shape[1] - 1).bit_length())
    for j in range(steps):
        by = 2 ** j
        v, w, m = _merge((_shift(v, by), _shift(w, by), _shift(m, by, NEG)), decay, (v, w, m))
        decay = decay + _shift(decay, by)
    if h0 is not None:  # decay is now the log-decay from the start to each chunk
        v, w, m = _merge(tuple(wide(s)[:, None] for s in h0), decay, (v, w, m))  # type: ignore[arg-type]
    return v, w, m


#: Chunk of `wkv4`: its per-step tensors are [B, chunks, A], small, so fewer, larger steps win
#: (16 was fastest from 128 to 16k tokens at A = 256 on this CPU).
WKV_CHUNK = 16


def wkv4_step(w: Tensor, u: Tensor, k: Tensor, v: Tensor, state: StableState) -> tuple[Tensor, StableState]:
    """One token of `wkv4` (k, v [B, A]): the reference recurrence itself."""
    k, v = wide(k), wide(v)
    mo = torch.maximum(state[2], u + k)
    ea, eb = (state[2] - mo).exp(), (u + k - mo).exp()
    out = (ea * state[0] + eb * v) / (ea * state[1] + eb)
    return out, _merge(state, -w, (v, torch.ones_like(v), k))


@torch.compiler.disable
def wkv4(w: Tensor, u: Tensor, k: Tensor, v: Tensor, state: StableState | None = None,
         chunk: int = WKV_CHUNK) -> tuple[Tensor, StableState]:
    """RWKV-4's WKV (Peng et al. 2023, eq. 14) per channel, in the numerically stable form:

        wkv_t = (Σ_{i<t} e^{−(t−1−i)w + k_i} v_i + e^{u + k_t} v_t) / (same sums without v)

    w [A] (> 0), u [A]; k, v [B, T, A]; state (num, den, m) [B, A] each, the sums so far scaled
    by e^−m (zeros and m = NEG if None). Returns (wkv [B, T, A], the state after T).

    The recurrence of the reference CPU kernel (transformers' `rwkv_linear_attention_cpu`), run
    over the positions of every chunk at once: pass 1 finds each chunk's own state, a log-step
    scan with the same max-stabilized merge gives every chunk's start state, pass 2 reruns the
    chunks from there and reads wkv out. No exponent ever exceeds 0."""
    t = k.shape[1]
    k, v, w, u = wide(k), wide(v), wide(w), wide(u)

    def steps(x: Tensor, pad: float) -> tuple[Tensor, ...]:
        return to_blocks(x, 1, chunk, value=pad).movedim(2, 0).contiguous().unbind(0)

    ks, vs = steps(k, NEG), steps(v, 0.0)  # padding: no input ...
    decays = steps((-w).expand_as(k), 0.0)  # ... and no decay
    zero = torch.zeros_like(ks[0])
    own: StableState = (zero, zero, torch.full_like(zero, NEG))
    for i in range(chunk):
        own = _merge(own, decays[i], (vs[i], torch.ones_like(zero), ks[i]))
    num, den, m = _stabilized_scan(own, sum(decays[1:], decays[0]), state)
    h: StableState = (num, den, m)
    final = (num[:, -1], den[:, -1], m[:, -1])  # the last chunk is all padding
    out = []
    for i in range(chunk):
        mo = torch.maximum(h[2], u + ks[i])
        ea, eb = (h[2] - mo).exp(), (u + ks[i] - mo).exp()
        out.append((ea * h[0] + eb * vs[i]) / (ea * h[1] + eb))
        h = _merge(h, decays[i], (vs[i], torch.ones_like(zero), ks[i]))
    return from_blocks(torch.stack(out, dim=2), 1, t), final


def _lower_bound(m: Tensor) -> Tensor:
    """e^{−m}, the 1 of max(|nᵀq|, 1) in units stabilized by m. Its exponent is capped at 80 (a
    memory whose largest weight is below e^−80 is empty as far as fp32 can tell): padded positions
    have m ≈ NEG, and e^{+1e38} = inf would turn into 0·inf = NaN in the backward pass."""
    return (-m).clamp(max=80.0).exp()


#: Chunk of `mlstm_scan`: its C×C score matrices dominate at large chunks, its D×D chunk states at
#: small ones (D = 128 in xlstm-tiny).
MLSTM_CHUNK = 64


@torch.compiler.disable
def mlstm_scan(q: Tensor, k: Tensor, v: Tensor, log_f: Tensor, i: Tensor, state: StableState | None = None,
               eps: float = 1e-6, chunk: int | None = None) -> tuple[Tensor, StableState]:
    """xLSTM's mLSTM memory (Beck et al. 2024, eqs. 19–27) with exponential input gates:

        C_t = f_t C_{t−1} + e^{i_t} k_t v_tᵀ,   n_t = f_t n_{t−1} + e^{i_t} k_t,
        h_t = C_tᵀ q_t / max(|n_tᵀ q_t|, 1)

    q, k, v [B, H, T, D] (k already scaled by 1/√D); log_f = log σ(f̃) and i (the raw input gate)
    [B, H, T]; state (C [B, H, D, D], n [B, H, D], m [B, H]) standing for (C·e^m, n·e^m) (no
    memory if None). Returns (h [B, H, T, D], the state after T).

    The exponent i_t is unbounded, so every sum is kept relative to its largest log-weight m (the
    stabilizer of the paper; no exponent ever exceeds 0) and h = (C̃ᵀq) / (max(|ñᵀq|, e^{−m}) + eps)
    with C̃ = C·e^{−m}: the same value for any m, up to eps (xlstm's convention). Chunked like
    `chunked_decay_attention`: a C×C log-weight matrix inside each chunk, the chunks' own (C, n, m)
    combined by `_stabilized_scan`, then read out by the queries of the next chunk."""
    t = q.shape[2]
    chunk = chunk or (CHUNK if tracing() else MLSTM_CHUNK)
    q, k, v, log_f, i = wide(q), wide(k), wide(v), wide(log_f), wide(i)
    qc, kc, vc = (to_blocks(x, 2, chunk) for x in (q, k, v))  # [B, H, n, L, D]
    la = to_blocks(log_f, 2, chunk)  # [B, H, n, L]; padding: no decay ...
    ic = to_blocks(i, 2, chunk, value=NEG)  # ... and no input
    cum = la.cumsum(dim=-1)
    # each chunk's own memory: log-weights of its tokens at the chunk's end, stabilized by their max
    w_end = cum[..., -1:] - cum + ic
    m_own = w_end.amax(dim=-1)
    kw = kc * (w_end - m_own[..., None]).exp()[..., None]
    own = (kw.transpose(-1, -2) @ vc, kw.sum(dim=-2), m_own)  # C [B, H, n, D, D], n [B, H, n, D], m
    by_chunk = (own[0].transpose(1, 2), own[1].transpose(1, 2)[..., None], own[2].transpose(1, 2)[..., None, None])
    h0 = None if state is None else (state[0], state[1][..., None], state[2][..., None, None])
    big_c, big_n, big_m = _stabilized_scan(by_chunk, cum[..., -1].transpose(1, 2)[..., None, None], h0)
    final = (big_c[:, -1], big_n[:, -1, ..., 0], big_m[:, -1, :, 0, 0])  # the last chunk is all padding
    c0, n0, m0 = big_c.transpose(1, 2), big_n[..., 0].transpose(1, 2), big_m[..., 0, 0].transpose(1, 2)
    # read-out: the chunk's start memory (log-weight cum_t + m0) and the chunk's own tokens
    log_w = segsum(la) + ic[..., None, :]  # [B, H, n, L, L]
    carry = cum + m0[..., None]
    m = torch.maximum(carry, log_w.amax(dim=-1))
    scores = (qc @ kc.transpose(-1, -2)) * (log_w - m[..., None]).exp()
    from_start = (carry - m).exp()
    num = scores @ vc + from_start[..., None] * (qc @ c0)
    den = scores.sum(dim=-1) + from_start * (qc @ n0[..., None])[..., 0]
    h = num / (torch.maximum(den.abs(), _lower_bound(m)) + eps)[..., None]
    return from_blocks(h, 2, t), final


def mlstm_step(q: Tensor, k: Tensor, v: Tensor, log_f: Tensor, i: Tensor, state: StableState,
               eps: float = 1e-6) -> tuple[Tensor, StableState]:
    """One token of `mlstm_scan` (q, k, v [B, H, D]; log_f, i [B, H]): the recurrence itself."""
    q, k, v, log_f, i = wide(q), wide(k), wide(v), wide(log_f), wide(i)
    c, n, m = state
    m_new = torch.maximum(log_f + m, i)
    fg, ig = (log_f + m - m_new).exp(), (i - m_new).exp()
    c = fg[..., None, None] * c + ig[..., None, None] * k[..., :, None] * v[..., None, :]
    n = fg[..., None] * n + ig[..., None] * k
    den = (n * q).sum(-1)
    h = (q[..., None, :] @ c)[..., 0, :] / (torch.maximum(den.abs(), _lower_bound(m_new)) + eps)[..., None]
    return h, (c, n, m_new)


#: Chunk of `wkv6`: its pairwise decays are a [C, C, K] tensor per chunk (T·C·K per head).
WKV6_CHUNK = 16


@torch.compiler.disable
def wkv6(r: Tensor, k: Tensor, v: Tensor, log_w: Tensor, u: Tensor, state: Tensor | None = None,
         chunk: int = WKV6_CHUNK) -> tuple[Tensor, Tensor]:
    """RWKV-6's WKV (Peng et al. 2024, "Eagle and Finch", eq. 18–19): per head, a matrix state
    with a data-dependent decay per key channel and a bonus u for the current token,

        y_t = r_t (diag(u) k_tᵀ v_t + S_{t−1}),    S_t = diag(w_t) S_{t−1} + k_tᵀ v_t

    r, k [B, H, T, K]; v [B, H, T, V]; log_w = log w_t [B, H, T, K] (≤ 0); u [H, K]; state
    S_{−1} [B, H, K, V] (zeros if None). Returns (y [B, H, T, V], S_T).

    Chunked with exact pairwise decays: inside a chunk the score of token j < i for query i is
    Σ_κ r_iκ k_jκ exp(Σ_{j<p<i} log w_pκ) — a [C, C, K] tensor of exponents that are all ≤ 0
    (no division by a cumulative decay, which overflows within a few tokens of strong decay);
    each chunk's own state is one matmul; `linear_scan` (per-key decays) gives the chunks'
    start states; r_i ⊙ exp(Σ_{p<i} log w_p) reads them."""
    t = r.shape[2]
    r, k, v, log_w = wide(r), wide(k), wide(v), wide(log_w)
    rc, kc, vc, lw = (to_blocks(x, 2, chunk) for x in (r, k, v, log_w))  # [B, H, n, C, ·]; padding: no decay
    cum = lw.cumsum(dim=-2)  # Σ_{p ≤ i} log w_p inside the chunk
    before = cum - lw  # Σ_{p < i}
    n_pos = rc.shape[-2]
    strict = torch.ones(n_pos, n_pos, dtype=torch.bool, device=r.device).tril(-1)[..., None]  # j < i
    pair = (before[..., :, None, :] - cum[..., None, :, :]).masked_fill(~strict, float("-inf")).exp()
    scores = torch.einsum("...ik,...jk,...ijk->...ij", rc, kc, pair)  # [B, H, n, C, C]
    bonus = (rc * kc * wide(u)[:, None, None]).sum(-1, keepdim=True)  # the current token, weight u
    y = scores @ vc + bonus * vc
    own = (kc * (cum[..., -1:, :] - cum).exp()).transpose(-1, -2) @ vc  # [B, H, n, K, V]
    h0 = None if state is None else wide(state)
    # chunk start states [B, n, H, K, V]: per-key decays over whole chunks; the last chunk is padding
    starts = linear_scan(_shift(cum[..., -1, :].transpose(1, 2)[..., None]), _shift(own.transpose(1, 2)), h0)
    y = y + (rc * before.exp()) @ starts.transpose(1, 2)
    return from_blocks(y, 2, t), starts[:, -1]


def wkv6_step(r: Tensor, k: Tensor, v: Tensor, log_w: Tensor, u: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """One token of `wkv6` (r, k, log_w [B, H, K]; v [B, H, V]): the recurrence itself."""
    r, k, v, log_w = wide(r), wide(k), wide(v), wide(log_w)
    kv = k[..., :, None] * v[..., None, :]
    y = (r[..., None, :] @ (wide(u)[..., None] * kv + state))[..., 0, :]
    return y, log_w.exp()[..., None] * state + kv
