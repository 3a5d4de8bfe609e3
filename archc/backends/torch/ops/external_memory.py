"""External memories (archc/ops/external_memory.py): the Neural Turing Machine's and the
Differentiable Neural Computer's. Each token's input (the controller's output) goes through the
`interface` map to the heads' parameters; the memory recurrence is `kernels/ntm` / `kernels/dnc`;
the read vectors go through `o_proj`. `forward` runs the recurrence from the declared initial state
over the whole sequence; `step` from the given state. Padded tokens leave the state unchanged.
Init: archc's N(0, 0.02) for both maps, zero biases.
"""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.context import Context
from archc.backends.torch.kernels.common import wide
from archc.backends.torch.kernels.dnc import DNCInterface, dnc_scan, dnc_step
from archc.backends.torch.kernels.ntm import ntm_scan, ntm_step, split_interface
from archc.backends.torch.module import OpModule, State
from archc.backends.torch.registry import implements


def _keep(x: Tensor, ctx: Context | None) -> Tensor:
    """[B, T] bool: the tokens that update the memory (not padding)."""
    if ctx is not None and ctx.attention_mask is not None:
        return ctx.attention_mask.bool()
    return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)


class _ExternalMemory(OpModule):
    """The shared frame: interface → recurrence → o_proj; a subclass gives `_scan` (its kernel's
    loop over the tokens) and `_cell` (one token: interface row and state → reads and state)."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.interface, self.o_proj = self.make_linear("interface"), self.make_linear("o_proj")

    def _initial(self, x: Tensor) -> tuple[Tensor, ...]:
        """The declared initial state (its fills), batch-sized, fp32 (or x's wider dtype)."""
        dtype = torch.promote_types(x.dtype, torch.float32)
        return tuple(torch.full((x.shape[0], *[int(d) for d in st.shape]), float(st.fill), dtype=dtype,
                                device=x.device) for st in self.declared_state)

    def _run(self, x: Tensor, ctx: Context | None, state: tuple[Tensor, ...]) -> tuple[Tensor, State]:
        reads, state = self._scan(self._cell, wide(self.interface(x)), _keep(x, ctx), state,
                                  self.o_proj.in_features)
        return self.o_proj(reads.to(x.dtype)), state

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        return self._run(x, ctx, self._initial(x))[0]

    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        dtype = torch.promote_types(x.dtype, torch.float32)  # fp32, or a wider model's dtype
        return self._run(x, ctx, tuple(s.to(dtype) for s in state))


@implements("ntm_memory")
class NTMMemory(_ExternalMemory):
    """`ntm_memory(x, slots, width, read_heads, write_heads, shift_range)`: the interface holds each
    read head's key, β, g, shift and γ, then each write head's and its erase (σ) and add vectors.
    State: `memory` [B, N, M] (1e-6), `read_weights` [B, R, N], `write_weights` [B, W, N]."""

    _scan = staticmethod(ntm_scan)

    def _cell(self, x_t: Tensor, carry: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        p = self.params
        m, s = p.width, 2 * p.shift_range + 1
        raw_read, raw_write = x_t.split((p.read_heads * p.read_interface(), p.write_heads * p.write_interface()), -1)
        reads, _ = split_interface(raw_read, m, s, p.read_heads)
        writes, rest = split_interface(raw_write, m, s, p.write_heads, extra=2 * m)
        read, new = ntm_step(*carry, reads, writes, torch.sigmoid(rest[..., :m]), rest[..., m:])
        return read.flatten(1), new


@implements("dnc_memory")
class DNCMemory(_ExternalMemory):
    """`dnc_memory(x, slots, width, read_heads)`: the interface vector of the paper's Methods
    (read keys and strengths, write key and strength, erase, write vector, free gates, allocation
    and write gates, read modes), the recurrence `kernels/dnc`. State: `memory` [B, N, W], `usage`,
    `precedence` [B, N], `link` [B, N, N], `read_weights` [B, R, N], `write_weights` [B, N]."""

    _scan = staticmethod(dnc_scan)

    def _cell(self, x_t: Tensor, carry: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        read, new = dnc_step(*carry, DNCInterface.parse(x_t, self.params.width, self.params.read_heads))
        return read.flatten(1), new
