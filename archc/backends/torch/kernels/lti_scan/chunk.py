"""The blocked form of x_t = A x_{t−1} + b u_t, y_t = c·x_t for a dense, time-invariant A.

Tokens in blocks of β = `LTI_BLOCK`: within a block the output is a causal convolution with the
kernel K_r = c A^r b (a β×β Toeplitz matrix per channel) plus the entering state read out through
the rows c A^{t+1}; across blocks one matrix-vector product per block, x ← A^β x + Σ_s A^{β−1−s} b u_s
(a `while_loop` under export). The powers come from log₂ β squarings of A and doubling, so the cost
is O(H·N³·log β) once per call plus O(L·H·(β + N²/β)) — no FFT (onnxruntime's DFT loses precision at
lengths that are not powers of two) and no per-token loop."""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.blocks import from_blocks, to_blocks
from archc.backends.torch.loops import exported_time_loop

#: Tokens per block (a power of two: the powers of A come from squarings).
LTI_BLOCK = 32


def _squarings(a: Tensor, block: int) -> list[Tensor]:
    """[A, A², A⁴, …, A^block]."""
    out = [a]
    while 2 ** (len(out) - 1) < block:
        out.append(out[-1] @ out[-1])
    return out


def _powers_times(squarings: list[Tensor], v: Tensor, block: int) -> Tensor:
    """[A^r v for r < block] stacked on the last axis, by doubling: v [H, N] -> [H, N, block]."""
    cols = v[..., None]
    for sq in squarings:
        if cols.shape[-1] >= block:
            break
        cols = torch.cat((cols, sq @ cols), dim=-1)
    return cols


def _power_apply(squarings: list[Tensor], exponent: Tensor, x: Tensor) -> Tensor:
    """A^exponent x for a tensor exponent below 2·block (its bits select the squarings)."""
    for bit, sq in enumerate(squarings):
        x = torch.where(((exponent >> bit) & 1).bool(), (sq @ x[..., None])[..., 0], x)
    return x


def _block_states(step_matrix: Tensor, inc: Tensor, x: Tensor) -> Tensor:
    """The state entering each block, x_{q+1} = A^β x_q + inc_q: inc [B, H, n, N] -> [B, H, n, N]."""
    def one(inc_q: Tensor, carry: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        return carry[0], ((step_matrix @ carry[0][..., None])[..., 0] + inc_q,)

    if torch.compiler.is_exporting():
        return exported_time_loop(one, inc, (x,), torch.zeros_like(inc), dim=2)[0]
    states = []
    for inc_q in inc.unbind(2):
        entering, (x,) = one(inc_q, (x,))
        states.append(entering)
    return torch.stack(states, dim=2)


def lti_scan(a: Tensor, b: Tensor, c: Tensor, u: Tensor, x: Tensor | None = None,
             block: int = LTI_BLOCK) -> tuple[Tensor, Tensor | None]:
    """u [B, H, L] from state x [B, H, N] (zeros when None) -> (y [B, H, L], x_L, or None when x
    is None: a forward pass without state). A [H, N, N], b and c [H, N]."""
    length = u.shape[-1]
    squarings = _squarings(a, block)
    rows = _powers_times([s.transpose(-1, -2) for s in squarings], c, 2 * block)  # c A^r, r < 2β: [H, N, 2β]
    cols = _powers_times(squarings, b, block)  # A^r b, r < β: [H, N, β]
    kernel = (c[..., None] * cols).sum(-2)  # K_r = c A^r b: [H, β]
    r = torch.arange(block, device=u.device)
    lag = r[:, None] - r[None, :]
    toeplitz = torch.where(lag >= 0, kernel[:, lag.clamp(min=0)], 0)  # [H, β (t), β (s)]
    ub = to_blocks(u, -1, block)  # [B, H, n, β]
    inc = torch.einsum("hns,bhqs->bhqn", cols.flip(-1), ub).contiguous()  # Σ_s A^{β−1−s} b u_s
    x0 = (torch.zeros_like(inc[:, :, 0]) if x is None else x).contiguous()  # while_loop carries: contiguous
    entering = _block_states(squarings[-1], inc, x0)  # [B, H, n, N]
    y = torch.einsum("hts,bhqs->bhqt", toeplitz, ub) + torch.einsum("hnt,bhqn->bhqt", rows[..., 1:block + 1], entering)
    y = from_blocks(y, -2, length)
    if x is None:
        return y, None
    # x_L: the state entering block q = L // β, advanced through its first L mod β tokens
    n = torch.ones(length, dtype=torch.long, device=u.device).sum()
    q, rem = (n // block).reshape(1), n % block
    x_q = entering.index_select(2, q)[:, :, 0]
    u_q = ub.index_select(2, q)[:, :, 0]  # [B, H, β]
    taken = r < rem
    partial = torch.einsum("hns,bhs->bhn", cols[..., (rem - 1 - r).clamp(min=0)] * taken, u_q)
    return y, _power_apply(squarings, rem, x_q) + partial
