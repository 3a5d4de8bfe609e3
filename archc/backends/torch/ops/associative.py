"""ARMT's associative memory (archc/ops/associative.py), laid out as ARMT's
`AssociativeLayerWrapper` (W_mq, W_mk, W_mv, W_mb):

    q, k = φ(W_mq x), φ(W_mk x)   (DPFP-ν);  v = W_mv x;  β = σ(W_mb x)
    out = reads of the memory per segment, written per segment (`kernels/associative`)

The block adds `out` to its residual stream, as ARMT adds the association to the layer's input.
Segments are absolute positions (multiples of `segment`). Padded tokens write nothing. Init:
N(0, 0.02) projections (β's bias 0: σ = ½). State: `memory` [B, F, d], `norm` [B, F] and the
pending `memory_write`, `norm_write` (fp32).
"""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.context import Context
from archc.backends.torch.kernels.associative import associative_scan, associative_step, dpfp
from archc.backends.torch.kernels.common import wide
from archc.backends.torch.module import OpModule, State
from archc.backends.torch.registry import implements


@implements("associative_memory")
class AssociativeMemory(OpModule):
    """`associative_memory(x, segment, key_dim, nu, eps)`; see the module docstring."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.W_mq, self.W_mk, self.W_mv, self.W_mb = (self.make_linear(n) for n in ("W_mq", "W_mk", "W_mv", "W_mb"))

    def _inputs(self, x: Tensor, ctx: Context | None) -> tuple[Tensor, ...]:
        nu = self.params.nu
        keep = None if ctx is None or ctx.attention_mask is None else ctx.attention_mask
        return (dpfp(wide(self.W_mq(x)), nu), dpfp(wide(self.W_mk(x)), nu), wide(self.W_mv(x)),
                torch.sigmoid(wide(self.W_mb(x)))[..., 0], keep)

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        q, k, v, beta, keep = self._inputs(x, ctx)
        out, _ = associative_scan(q, k, v, beta, self.params.segment, self.params.eps, keep)
        return out.to(x.dtype)

    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        q, k, v, beta, keep = self._inputs(x, ctx)
        p, start = self.params, ctx.positions
        if not torch.compiler.is_exporting() and not torch.compiler.is_compiling() and x.shape[1] > p.segment \
                and int(start[0]) % p.segment == 0:
            # a prefill from a segment's start: its whole segments in one scan, then the rest token by token
            full = (x.shape[1] // p.segment) * p.segment
            head, (a, z) = associative_scan(q[:, :full], k[:, :full], v[:, :full], beta[:, :full], p.segment, p.eps,
                                            None if keep is None else keep[:, :full], (state[0], state[1]))
            tail, new = associative_step(q[:, full:], k[:, full:], v[:, full:], beta[:, full:], start[full:],
                                         p.segment, p.eps, (a, z, state[2], state[3]),
                                         None if keep is None else keep[:, full:])
            return torch.cat((head, tail), 1).to(x.dtype), new
        out, new = associative_step(q, k, v, beta, start, p.segment, p.eps, tuple(state), keep)
        return out.to(x.dtype), new
