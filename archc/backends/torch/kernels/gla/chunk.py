"""Gated linear attention in chunks with exact pairwise decays (no division by cumulative decays),
as RWKV-6's WKV (`kernels/wkv6/chunk.py`) but reading the memory after the token's own write:
o_t = q_t S_t (GLA) rather than r_t S_{t−1} + a bonus (RWKV-6)."""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.blocks import from_blocks, to_blocks
from archc.backends.torch.kernels.common import linear_scan, shift, wide

#: Tokens per chunk: the pairwise decays are a [C, C, K] tensor per chunk (T·C·K per head).
GLA_CHUNK = 16


@torch.compiler.disable
def chunk_gla(q: Tensor, k: Tensor, v: Tensor, log_a: Tensor, state: Tensor | None = None,
              chunk: int = GLA_CHUNK) -> tuple[Tensor, Tensor]:
    """`naive_gla`'s values: q, k, log α [B, H, T, K] (q scaled); v [B, H, T, V]; state S_{−1}
    [B, H, K, V] (zeros if None). Returns (o [B, H, T, V], S_{T−1}) in fp32.

    Inside a chunk the score of token j ≤ i for query i is Σ_κ q_iκ k_jκ exp(Σ_{j<p≤i} log α_pκ): a
    [C, C, K] tensor of exponents that are all ≤ 0 — GLA's decays, like RWKV-6's, can be strong
    enough that dividing by a cumulative decay overflows within a chunk (flash-linear-attention
    uses sub-chunks for the same reason). Each chunk's own state is one matmul; `linear_scan`
    (per-key decays) gives the chunks' start states; q_i ⊙ exp(Σ_{p≤i} log α_p) reads them."""
    t = q.shape[2]
    q, k, v, log_a = wide(q), wide(k), wide(v), wide(log_a)
    qc, kc, vc, la = (to_blocks(x, 2, chunk) for x in (q, k, v, log_a))  # [B, H, n, C, ·]; padding: no decay
    cum = la.cumsum(dim=-2)  # Σ_{p ≤ i} log α_p inside the chunk
    n_pos = qc.shape[-2]
    causal = torch.ones(n_pos, n_pos, dtype=torch.bool, device=q.device).tril()[..., None]  # j ≤ i
    pair = (cum[..., :, None, :] - cum[..., None, :, :]).masked_fill(~causal, float("-inf")).exp()
    scores = ((pair * kc[..., None, :, :]) @ qc[..., :, :, None])[..., 0]  # [B, H, n, C, C]
    o = scores @ vc
    own = (kc * (cum[..., -1:, :] - cum).exp()).transpose(-1, -2) @ vc  # [B, H, n, K, V]
    h0 = None if state is None else wide(state)
    # chunk start states [B, n, H, K, V]: per-key decays over whole chunks; the last chunk is padding
    starts = linear_scan(shift(cum[..., -1, :].transpose(1, 2)[..., None]), shift(own.transpose(1, 2)), h0)
    o = o + (qc * cum.exp()) @ starts.transpose(1, 2)
    return from_blocks(o, 2, t), starts[:, -1]
