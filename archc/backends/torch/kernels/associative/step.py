"""New tokens of ARMT's associative memory against the stored memory (A, z) and the current
segment's pending write (ΔA, Δz): each token reads (A, z), adds its write to the pending one, and
the segment's last token commits it — by `torch.where` on the position, so one traced graph
serves every position."""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.kernels.associative.chunk import read, write
from archc.backends.torch.loops import exported_time_loop


def associative_step(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, positions: Tensor, segment: int, eps: float,
                     state: tuple[Tensor, ...], keep: Tensor | None = None) -> tuple[Tensor, tuple[Tensor, ...]]:
    """q, k [B, T, F], v [B, T, d], β [B, T] at `positions` [T]; state (A, z, ΔA, Δz); keep [B, T].
    Returns (reads [B, T, d], the new state)."""
    b, t, _ = q.shape
    keep = torch.ones(b, t, dtype=q.dtype, device=q.device) if keep is None else keep.to(q.dtype)

    def one(xs: tuple[Tensor, ...], carry: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        qt, kt, vt, bt, mt, pt = xs
        a, z, da, dz = carry
        out = read(qt[:, None], a, z, eps)[:, 0]
        wa, wz = write(kt[:, None], vt[:, None], bt[:, None], mt[:, None], a, z, eps)
        da, dz = da + wa, dz + wz
        end = (torch.remainder(pt[0], segment) == segment - 1)  # every row is at the same position
        return out, (torch.where(end, a + da, a), torch.where(end, z + dz, z),
                     torch.where(end, torch.zeros_like(da), da), torch.where(end, torch.zeros_like(dz), dz))

    pos = positions[None].expand(b, -1)
    xs = (q, k, v, beta, keep, pos)
    if torch.compiler.is_exporting() and t > 1:
        return exported_time_loop(one, xs, tuple(s.contiguous() for s in state), torch.zeros_like(v), dim=1)
    outs, carry = [], tuple(state)
    for i in range(t):
        o, carry = one(tuple(x[:, i] for x in xs), carry)
        outs.append(o)
    return torch.stack(outs, 1), carry
