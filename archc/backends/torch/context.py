"""What every op of one call shares (`Context`), and whether the call is being traced."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class Context:
    #: [T] int64: absolute positions of the tokens in this call.
    positions: Tensor
    #: [B, T] bool, True for real tokens (padding mask of `forward`); None when nothing is padded.
    attention_mask: Tensor | None = None
    #: [B, T] int64 segment ids for `embed(..., token_types=n)`.
    token_type_ids: Tensor | None = None
    #: Auxiliary losses (already weighted) appended by ops during the call.
    aux_losses: list[Tensor] = field(default_factory=list)
    #: True inside `step` (incremental decoding).
    decoding: bool = False
    #: Per-call memo for values every layer would recompute (e.g. RoPE tables), keyed by the op.
    memo: dict[Any, Any] = field(default_factory=dict)

    def on_new_axis(self, length: int, device: torch.device) -> Context:
        """The context of ops on another time axis (e.g. Perceiver's latents): positions 0..length-1,
        no padding mask; auxiliary losses still go to the same list."""
        return Context(torch.arange(length, device=device), aux_losses=self.aux_losses, decoding=self.decoding)


def tracing() -> bool:
    """True under `torch.compile` / `torch.export`: eager-only shortcuts (data-dependent early
    exits, gathers by `nonzero`) must not be taken, or the traced graph would bake them in."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


_shapes_only = False


def reads_values() -> bool:
    """Whether an op may branch on a tensor's values (an early exit when every sequence halted):
    not when traced, nor on the activation profile's fake tensors (`shapes_only`)."""
    return not (_shapes_only or tracing())


@contextmanager
def shapes_only() -> Iterator[None]:
    """Run eagerly on tensors that have shapes and no values (FakeTensorMode: the activation
    profile, archc/backends/torch/activation_profile.py); `reads_values()` is False inside."""
    global _shapes_only
    before, _shapes_only = _shapes_only, True
    try:
        yield
    finally:
        _shapes_only = before
