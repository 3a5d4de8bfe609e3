"""The gated delta rule in chunks (the WY / UT-transform form of Yang et al. 2024, §3.2, as
flash-linear-attention's `chunk_gated_delta_rule`): inside a chunk of C tokens every update is
folded into two C-row matrices by one triangular inverse, so the chunk costs a few matmuls;
across chunks the state is carried.

With γ the cumulative log-decay inside a chunk, D_ij = exp(γ_i − γ_j) (i ≥ j) and
A = tril₋₁((β ⊙ K) Kᵀ ⊙ D), T = (I + A)⁻¹:

    W = T (β ⊙ K ⊙ e^γ),   U = T (β ⊙ V)                       (the WY representation)
    V' = U − W S,   O = (Q ⊙ e^γ) S + (Q Kᵀ ⊙ D) V',   S ← e^{γ_C} S + (K ⊙ e^{γ_C − γ})ᵀ V'

T is computed as ∏_j (I + N^(2^j)) with N = −A, exact because A is nilpotent (A^C = 0):
log2(C) pairs of C×C matmuls, no triangular solve (which neither ONNX nor every export target
has). Across chunks the carry S [K, V] has a matrix-valued transition (e^{γ_C} I − K̃ᵀW), which
no elementwise scan expresses, so it is a loop over the chunks: Python in eager mode, one
`while_loop` under `torch.export` (the chunk count stays symbolic). Padding tokens get β = 0 and
g = 0, so they neither write nor decay the state.
"""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.blocks import from_blocks, to_blocks
from archc.backends.torch.loops import exported_time_loop

#: Tokens per chunk: the chunk's C×C matrices stay small, and the inverse's product has 6 terms.
CHUNK = 64


def _unit_lower_inverse(a: Tensor) -> Tensor:
    """(I + A)⁻¹ for strictly lower-triangular A [..., C, C], as ∏ (I + N^(2^j)), N = −A."""
    c = a.shape[-1]
    eye = torch.eye(c, dtype=a.dtype, device=a.device)
    n, inv, span = -a, eye + (-a), 2
    while span < c:
        n = n @ n
        inv = inv + inv @ n
        span *= 2
    return inv


@torch.compiler.disable
def chunk_gated_delta_rule(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
                           state: Tensor | None = None, chunk: int = CHUNK) -> tuple[Tensor, Tensor]:
    """q, k [B, H, T, K] (q already scaled), v [B, H, T, V], g = log α ≤ 0 and β [B, H, T], state
    S_{−1} [B, H, K, V] (zeros if None). Returns (o [B, H, T, V] in q's dtype, the final state in
    fp32 or wider): the values of `naive_gated_delta_rule`."""
    dt = torch.promote_types(q.dtype, torch.float32)
    out_dtype = q.dtype
    t = q.shape[2]
    q, k, v, g, beta = (to_blocks(x.to(dt), 2, chunk) for x in (q, k, v, g, beta))  # [B, H, n, C, ·]
    b, h, _, c, dk = k.shape
    gamma = g.cumsum(-1)                                                  # [B, H, n, C]
    causal = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    decay = (gamma[..., :, None] - gamma[..., None, :]).masked_fill(~causal, float("-inf")).exp()
    kb = k * beta[..., None]
    a = (kb @ k.transpose(-1, -2) * decay).tril(-1)
    inv = _unit_lower_inverse(a)
    w = inv @ (kb * gamma.exp()[..., None])                               # [B, H, n, C, K]
    u = inv @ (v * beta[..., None])                                       # [B, H, n, C, V]
    attn = q @ k.transpose(-1, -2) * decay                                # [B, H, n, C, C]
    q_dec = q * gamma.exp()[..., None]
    last = gamma[..., -1:]
    k_dec = k * (last - gamma).exp()[..., None]
    chunk_decay = last.exp()[..., None]                                   # [B, H, n, 1, 1]
    s = torch.zeros(b, h, dk, v.shape[-1], dtype=dt, device=q.device) if state is None else state.to(dt)

    def one(xs: tuple[Tensor, ...], s: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        u_c, w_c, q_c, attn_c, k_c, decay_c = xs
        v_new = u_c - w_c @ s[0]
        o = q_c @ s[0] + attn_c @ v_new
        return o, (decay_c * s[0] + k_c.transpose(-1, -2) @ v_new,)

    per_chunk = (u, w, q_dec, attn, k_dec, chunk_decay)
    if torch.compiler.is_exporting():
        o, (s,) = exported_time_loop(one, per_chunk, (s,), torch.zeros_like(u), dim=2)
    else:
        outs = []
        for i in range(u.shape[2]):
            o_i, (s,) = one(tuple(x[:, :, i] for x in per_chunk), (s,))
            outs.append(o_i)
        o = torch.stack(outs, 2)
    return from_blocks(o, 2, t).to(out_dtype), s
