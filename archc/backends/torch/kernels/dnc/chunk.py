"""The Differentiable Neural Computer's memory over a sequence: `dnc_step` token by token (the update is
nonlinear in the memory, so there is no parallel form) — eager Python, one `while_loop` under
`torch.export` (the length stays symbolic), run eagerly inside `torch.compile`. Padded tokens
leave the memory and the weightings as they were."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from archc.backends.torch.loops import exported_time_loop


@torch.compiler.disable
def dnc_scan(step: Callable[[Tensor, tuple[Tensor, ...]], tuple[Tensor, tuple[Tensor, ...]]], interface: Tensor,
             keep: Tensor, state: tuple[Tensor, ...], read_width: int) -> tuple[Tensor, tuple[Tensor, ...]]:
    """interface [B, T, I] (the projected controller outputs), keep [B, T] (False on padding),
    state (memory, usage, precedence, link, read and write weightings); `step(interface_t, state)` → (reads [B, R·W],
    new state). Returns (reads [B, T, R·W], final state)."""

    def one(xs: tuple[Tensor, Tensor], carry: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        x_t, keep_t = xs
        read, new = step(x_t, carry)
        kept = tuple(torch.where(keep_t.reshape(-1, *([1] * (n.dim() - 1))), n, c) for n, c in zip(new, carry, strict=True))
        return read, kept

    if torch.compiler.is_exporting():
        out = interface.new_zeros(*interface.shape[:2], read_width)
        return exported_time_loop(one, (interface, keep), state, out)
    reads = []
    for t in range(interface.shape[1]):
        read, state = one((interface[:, t], keep[:, t]), state)
        reads.append(read)
    return torch.stack(reads, 1), state
