"""RWKV-7's generalized delta rule in chunks: inside a chunk every rank-one update is folded by one
triangular inverse (the WY form of the gated delta rule, `kernels/gated_delta_rule/chunk.py`,
with a decay per key channel and separate a, b vectors); across chunks the state is carried.

With γ_t the cumulative log-decay inside a chunk (a vector per key channel), u_tᵀ = a_tᵀ S_{t−1}
(the rank-one term's read) satisfies

    U = T (Ã S₀ + L_ak V),   T = (I − L_ab)⁻¹,   Ã_t = a_t ⊙ e^{γ_{t−1}}
    L_xy[t, s] = Σ_κ x_tκ y_sκ e^{γ_{t−1,κ} − γ_{s,κ}}   (s < t)

and then o_t = (r_t ⊙ e^{γ_t})ᵀ S₀ + Σ_{s≤t} R_b[t, s] u_s + Σ_{s≤t} R_k[t, s] v_s (R as L with
e^{γ_t − γ_s}, s ≤ t), S_C = e^{γ_C} ⊙ S₀ + (b ⊙ e^{γ_C − γ})ᵀ U + (k ⊙ e^{γ_C − γ})ᵀ V.
The pairwise decays are [C, C, K] tensors of exponents ≤ 0, as GLA's (`kernels/gla/chunk.py`):
no division by a cumulative decay. The carry's transition is a matrix, so the chunks are a loop:
Python in eager mode, one `while_loop` under `torch.export`. Padding tokens (log w = k = a = b =
0) neither write nor decay the state.
"""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.blocks import from_blocks, to_blocks
from archc.backends.torch.kernels.gated_delta_rule.chunk import _unit_lower_inverse
from archc.backends.torch.loops import exported_time_loop

#: Tokens per chunk: the pairwise decays are a [C, C, K] tensor per chunk.
RWKV7_CHUNK = 16


def _pairwise(x: Tensor, decay: Tensor, y: Tensor) -> Tensor:
    """Σ_κ x_tκ y_sκ decay[t, s, κ] → [..., C, C]."""
    return ((decay * y[..., None, :, :]) @ x[..., :, :, None])[..., 0]


@torch.compiler.disable
def chunk_rwkv7(r: Tensor, log_w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor,
                state: Tensor | None = None, chunk: int = RWKV7_CHUNK) -> tuple[Tensor, Tensor]:
    """`naive_rwkv7`'s values: r, log w, k, a, b [B, H, T, K]; v [B, H, T, V]; state S_{−1}
    [B, H, K, V] (zeros if None). Returns (o [B, H, T, V], S_{T−1}) in fp32 or wider."""
    dt = torch.promote_types(r.dtype, torch.float32)
    t = r.shape[2]
    r, log_w, k, v, a, b = (to_blocks(x.to(dt), 2, chunk) for x in (r, log_w, k, v, a, b))  # [B, H, n, C, ·]
    bsz, h, _, c, dk = k.shape
    gamma = log_w.cumsum(-2)                                   # γ_t, t = 1..C
    before = gamma - log_w                                     # γ_{t−1}
    idx = torch.arange(c, device=r.device)
    strict = (idx[:, None] > idx[None, :])[..., None]          # s < t
    causal = (idx[:, None] >= idx[None, :])[..., None]         # s ≤ t
    prev = (before[..., :, None, :] - gamma[..., None, :, :]).masked_fill(~strict, float("-inf")).exp()
    here = (gamma[..., :, None, :] - gamma[..., None, :, :]).masked_fill(~causal, float("-inf")).exp()
    inv = _unit_lower_inverse(-_pairwise(a, prev, b))          # (I − L_ab)⁻¹
    w_read = inv @ (a * before.exp())                          # U = W S₀ + U₀
    u0 = inv @ (_pairwise(a, prev, k) @ v)
    r_b = _pairwise(r, here, b)                                # [B, H, n, C, C]
    r_kv = _pairwise(r, here, k) @ v
    r_dec = r * gamma.exp()
    last = gamma[..., -1:, :]
    b_end = b * (last - gamma).exp()
    kv_end = (k * (last - gamma).exp()).transpose(-1, -2) @ v  # [B, H, n, K, V]
    decay_end = last.transpose(-1, -2).exp()                   # [B, H, n, K, 1]
    s = torch.zeros(bsz, h, dk, v.shape[-1], dtype=dt, device=r.device) if state is None else state.to(dt)

    def one(xs: tuple[Tensor, ...], s: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        w_c, u0_c, r_dec_c, r_b_c, r_kv_c, b_end_c, kv_end_c, decay_c = xs
        u = w_c @ s[0] + u0_c
        o = r_dec_c @ s[0] + r_b_c @ u + r_kv_c
        return o, (decay_c * s[0] + b_end_c.transpose(-1, -2) @ u + kv_end_c,)

    per_chunk = (w_read, u0, r_dec, r_b, r_kv, b_end, kv_end, decay_end)
    if torch.compiler.is_exporting():
        o, (s,) = exported_time_loop(one, per_chunk, (s,), torch.zeros_like(u0), dim=2)
    else:
        outs = []
        for i in range(u0.shape[2]):
            o_i, (s,) = one(tuple(x[:, :, i] for x in per_chunk), (s,))
            outs.append(o_i)
        o = torch.stack(outs, 2)
    return from_blocks(o, 2, t), s
