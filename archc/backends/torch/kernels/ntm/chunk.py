"""The Neural Turing Machine's memory over a sequence: its step token by token (the update is nonlinear
in the memory, so there is no parallel form), by `loops.kept_state_scan` — eager Python, one
`while_loop` under `torch.export`, run eagerly inside `torch.compile`. Padded tokens leave the
state as it was."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from archc.backends.torch.loops import kept_state_scan


@torch.compiler.disable
def ntm_scan(step: Callable[[Tensor, tuple[Tensor, ...]], tuple[Tensor, tuple[Tensor, ...]]], interface: Tensor,
             keep: Tensor, state: tuple[Tensor, ...], read_width: int) -> tuple[Tensor, tuple[Tensor, ...]]:
    """interface [B, T, I] (the projected controller outputs), keep [B, T] (False on padding),
    state (memory, read weightings, write weightings); `step(interface_t, state)` → (reads [B, R·M], new state). Returns
    (reads [B, T, R·M], final state)."""
    return kept_state_scan(step, interface, keep, state, read_width)
