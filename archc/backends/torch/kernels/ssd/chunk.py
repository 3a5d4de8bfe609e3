"""Chunked decay attention: the C×C dual form inside chunks, `linear_scan` across them."""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.blocks import from_blocks, to_blocks
from archc.backends.torch.kernels.common import CHUNK, linear_scan, segsum, shift


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
    # one dtype for all (fp32 at least): Mamba-2 passes fp32 decays beside the model's dtype
    dt = torch.promote_types(torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype), torch.float32)
    q, k, v, log_a = q.to(dt), k.to(dt), v.to(dt), log_a.to(dt)
    qc, kc, vc = (to_blocks(x, 2, chunk) for x in (q, k, v))  # [B, H, n, C, ·]
    la = to_blocks(log_a, 2, chunk)  # [B, H, n, C]; padding: decay 1 (log 0), k = 0
    cum = la.cumsum(dim=-1)
    scores = (qc @ kc.transpose(-1, -2)) * segsum(la).exp()
    intra = scores @ vc
    to_end = (cum[..., -1:] - cum).exp()  # decay from each position to its chunk's end
    own = (kc * to_end[..., None]).transpose(-1, -2) @ vc  # [B, H, n, K, V]
    h0 = None if state is None else state.to(dt)
    # each chunk's start state [B, n, H, K, V]; the last chunk is all padding: its start is final
    starts = linear_scan(shift(cum[..., -1].transpose(1, 2)[..., None, None]), shift(own.transpose(1, 2)), h0)
    y = intra + (qc * cum.exp()[..., None]) @ starts.transpose(1, 2)
    return from_blocks(y, 2, t), starts[:, -1]
