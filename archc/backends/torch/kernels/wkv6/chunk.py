"""RWKV-6's WKV in 16-token chunks with exact pairwise decays (no division by cumulative decays)."""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.blocks import from_blocks, to_blocks
from archc.backends.torch.kernels.common import linear_scan, shift, wide

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
    # Σ_κ r_iκ k_jκ pair_ijκ as a batched matrix-vector product per query: as fast as the
    # three-operand einsum in torch, and 30 ms → a MatMul per layer in onnxruntime (its Einsum)
    scores = ((pair * kc[..., None, :, :]) @ rc[..., :, :, None])[..., 0]  # [B, H, n, C, C]
    bonus = (rc * kc * wide(u)[:, None, None]).sum(-1, keepdim=True)  # the current token, weight u
    y = scores @ vc + bonus * vc
    own = (kc * (cum[..., -1:, :] - cum).exp()).transpose(-1, -2) @ vc  # [B, H, n, K, V]
    h0 = None if state is None else wide(state)
    # chunk start states [B, n, H, K, V]: per-key decays over whole chunks; the last chunk is padding
    starts = linear_scan(shift(cum[..., -1, :].transpose(1, 2)[..., None]), shift(own.transpose(1, 2)), h0)
    y = y + (rc * before.exp()) @ starts.transpose(1, 2)
    return from_blocks(y, 2, t), starts[:, -1]
