"""ARMT's associative memory a segment at a time: the segment's tokens read the memory together,
then write it together (both against the memory before the segment, so nothing inside a segment
depends on the order of its tokens). The segments are a loop — Python in eager mode, a
`while_loop` under `torch.export` — run eagerly inside `torch.compile`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from archc.backends.torch.blocks import from_blocks, to_blocks
from archc.backends.torch.loops import exported_time_loop


def dpfp(x: Tensor, nu: int) -> Tensor:
    """DPFP-ν (Schlag, Irie & Schmidhuber 2021, eq. 28): r = [ReLU(x), ReLU(−x)], then
    r ⊙ roll(r, j) for j = 1 … ν, concatenated: 2·width·ν non-negative features."""
    r = torch.cat((F.relu(x), F.relu(-x)), -1)
    return torch.cat([r * r.roll(j, dims=-1) for j in range(1, nu + 1)], -1)


def read(q: Tensor, a: Tensor, z: Tensor, eps: float) -> Tensor:
    """A φ(q) / (z · φ(q) + ε): q [B, …, F], a [B, F, d], z [B, F]."""
    return (q @ a) / ((q * z[:, None]).sum(-1, keepdim=True) + eps)


def write(k: Tensor, v: Tensor, beta: Tensor, keep: Tensor, a: Tensor, z: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """The delta rule's write of tokens k [B, n, F], v [B, n, d], β, keep [B, n] against (a, z):
    (ΔA [B, F, d], Δz [B, F])."""
    previous = read(k, a, z, eps)
    norm = (k * k).sum(-1)
    # γ's share of the normalizer: clipped to [0, 1] and not differentiated, as ARMT's reference code
    gamma = torch.where(norm > 0, 1 - (k * z[:, None]).sum(-1) / norm.clamp(min=1e-30), 0.0).clamp(0, 1).detach()
    w = (beta * keep).unsqueeze(-1)
    return k.transpose(1, 2) @ (w * (v - previous)), ((gamma * keep)[..., None] * k).sum(1)


@torch.compiler.disable
def associative_scan(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, segment: int, eps: float,
                     keep: Tensor | None = None, state: tuple[Tensor, Tensor] | None = None
                     ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """`naive_associative`'s reads from a sequence that starts a segment: q, k [B, T, F], v [B, T, d],
    β, keep [B, T]; `state` (A, z) before it (zeros if None). Returns (reads [B, T, d], (A, z)
    after the last complete segment, the pending write of an incomplete last one added)."""
    b, t, f = q.shape
    dt = torch.promote_types(q.dtype, torch.float32)
    q, k, v, beta = q.to(dt), k.to(dt), v.to(dt), beta.to(dt)
    keep = torch.ones(b, t, dtype=dt, device=q.device) if keep is None else keep.to(dt)
    a, z = (torch.zeros(b, f, v.shape[-1], dtype=dt, device=q.device), torch.zeros(b, f, dtype=dt, device=q.device)) \
        if state is None else (state[0].to(dt), state[1].to(dt))
    blocks = tuple(to_blocks(x, 1, segment) for x in (q, k, v, beta, keep))   # [B, n, L, ·]; padding keeps 0

    def one(xs: tuple[Tensor, ...], carry: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        qs, ks, vs, bs, ms = xs
        a, z = carry
        out = read(qs, a, z, eps)
        da, dz = write(ks, vs, bs, ms, a, z, eps)
        return out, (a + da, z + dz)

    if torch.compiler.is_exporting():
        out, (a, z) = exported_time_loop(one, blocks, (a, z), torch.zeros_like(blocks[2]), dim=1)
    else:
        outs = []
        for i in range(blocks[0].shape[1]):
            o, (a, z) = one(tuple(x[:, i] for x in blocks), (a, z))
            outs.append(o)
        out = torch.stack(outs, 1)
    return from_blocks(out, 1, t), (a, z)
