"""RWKV-4's WKV over chunks: positions of every chunk at once, chunk states by a max-stabilized scan."""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.blocks import from_blocks, to_blocks
from archc.backends.torch.kernels.common import NEG, StableState, merge, stabilized_scan, wide

#: Chunk of `wkv4`: its per-step tensors are [B, chunks, A], small, so fewer, larger steps win
#: (16 was fastest from 128 to 16k tokens at A = 256 on this CPU).
WKV_CHUNK = 16


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
        own = merge(own, decays[i], (vs[i], torch.ones_like(zero), ks[i]))
    num, den, m = stabilized_scan(own, sum(decays[1:], decays[0]), state)
    h: StableState = (num, den, m)
    final = (num[:, -1], den[:, -1], m[:, -1])  # the last chunk is all padding
    out = []
    for i in range(chunk):
        mo = torch.maximum(h[2], u + ks[i])
        ea, eb = (h[2] - mo).exp(), (u + ks[i] - mo).exp()
        out.append((ea * h[0] + eb * vs[i]) / (ea * h[1] + eb))
        h = merge(h, decays[i], (vs[i], torch.ones_like(zero), ks[i]))
    return from_blocks(torch.stack(out, dim=2), 1, t), final
