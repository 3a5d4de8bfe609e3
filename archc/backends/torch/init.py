"""Seeded, device-independent weight initialization (`Init`)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Init:
    """Weight initialization with a seeded generator, bit-for-bit reproducible on any device.

    Values are drawn on the CPU from one `torch.Generator` in node order and copied to the
    parameter's device, so a seed gives the same weights on CPU and CUDA. `default` follows each
    weight's declared init role (`archc.ir.weights.InitRole`): GPT-2 / Llama's N(0, std=0.02),
    zero biases, unit norm scales, and for the output projections of residual branches (role
    `residual`: attention's `o_proj.weight`, an FFN's `down_proj.weight`, …) std/√(2·n_layers)
    (GPT-2's scaled residual init, Radford et al. 2019), with n_layers the number of token mixers;
    weights of role `own` are left to the module's `init_weights`.
    """

    def __init__(self, seed: int, std: float = 0.02, n_layers: int = 1,
                 op_counts: dict[str, int] | None = None) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.std = std
        self.residual_std = std / (2 * max(n_layers, 1)) ** 0.5
        #: How many nodes of each op the model has (depth-dependent inits, e.g. RWKV's).
        self.op_counts: dict[str, int] = dict(op_counts or {})
        self._seen: dict[str, int] = {}

    def layer_index(self, op: str) -> int:
        """0, 1, 2, … on successive calls for `op`: the depth of the module being initialized
        among the model's nodes of that op (modules are initialized in node order)."""
        i = self._seen.get(op, 0)
        self._seen[op] = i + 1
        return i

    def normal_(self, t: Tensor, std: float | None = None, mean: float = 0.0) -> None:
        v = torch.randn(t.shape, generator=self.gen, dtype=torch.float32) * (self.std if std is None else std) + mean
        with torch.no_grad():
            t.copy_(v.to(t.dtype))

    def uniform_(self, t: Tensor, low: float, high: float) -> None:
        v = torch.rand(t.shape, generator=self.gen, dtype=torch.float32) * (high - low) + low
        with torch.no_grad():
            t.copy_(v.to(t.dtype))

    def randn(self, *shape: int) -> Tensor:
        return torch.randn(shape, generator=self.gen, dtype=torch.float32)

    def default(self, module: nn.Module) -> None:
        """Every declared weight of `module` by its init role (`normal`, `residual`, `zeros`,
        `ones`; `own` is left to the module). Weights of nested op modules (a MoE's experts) are
        theirs to initialize."""
        declared = getattr(module, "declared_weights", {})
        nested = [f"{n}." for n, m in module.named_modules() if n and hasattr(m, "declared_weights")]
        for name, p in module.named_parameters():
            if any(name.startswith(prefix) for prefix in nested):
                continue
            role = declared[name].init
            if role in ("normal", "residual"):
                self.normal_(p, self.residual_std if role == "residual" else None)
            elif role != "own":
                with torch.no_grad():
                    p.fill_(1.0 if role == "ones" else 0.0)
