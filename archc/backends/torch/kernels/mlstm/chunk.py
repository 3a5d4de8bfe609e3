"""The mLSTM memory in chunks: the L×L log-weight matrix inside, a max-stabilized scan across."""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.blocks import from_blocks, to_blocks
from archc.backends.torch.context import tracing
from archc.backends.torch.kernels.common import CHUNK, NEG, StableState, segsum, stabilized_scan, wide


def lower_bound(m: Tensor) -> Tensor:
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
    combined by `stabilized_scan`, then read out by the queries of the next chunk."""
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
    big_c, big_n, big_m = stabilized_scan(by_chunk, cum[..., -1].transpose(1, 2)[..., None, None], h0)
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
    h = num / (torch.maximum(den.abs(), lower_bound(m)) + eps)[..., None]
    return from_blocks(h, 2, t), final
