"""The cost model's value types: what one node costs, and the context it is costed in.

`Cost` is a small value with `+` (tinygrad's `Estimates`): each op's cost rule returns one, the
summary adds them per layer and in total. Conventions (docs/ops.md states each op's formula):

* `params`: exact count of trainable parameters (buffers such as random features excluded).
* `flops`: forward FLOPs per token, 2·m·n·k for a matmul; attention's score and value products
  add 4·T_eff·H·head_dim per token, with T_eff the average attended context (≈T/2 when causal,
  min(T, window) for a sliding window) at the sequence length being costed.
* `act_bytes`: activation bytes per token kept for the backward pass in training, assuming fused
  attention (no T×T score matrix is stored), at the costed dtype.
* `state_bytes`: inference state per sequence (KV cache, recurrent state) at the costed context.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "int8": 1}


@dataclass(frozen=True, slots=True)
class CostCtx:
    """What a cost depends on besides the op: context length, batch and storage dtype."""

    seq: int = 2048
    batch: int = 1
    dtype: str = "bf16"

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def env(self) -> dict[str, int]:
        return {"batch": self.batch, "seq": self.seq}


@dataclass(frozen=True, slots=True)
class StateTensor:
    """One tensor of an op's inference state, per sequence (batch dimension left out)."""

    name: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass(frozen=True, slots=True)
class Cost:
    params: int = 0
    flops: float = 0.0
    act_bytes: float = 0.0
    state_bytes: int = 0
    state: tuple[StateTensor, ...] = field(default=(), compare=False)

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.params + other.params,
            self.flops + other.flops,
            self.act_bytes + other.act_bytes,
            self.state_bytes + other.state_bytes,
            self.state + other.state,
        )

    def scale_compute(self, factor: float) -> Cost:
        """Same parameters and state, compute and activations scaled (e.g. MoD capacity)."""
        return Cost(self.params, self.flops * factor, self.act_bytes * factor, self.state_bytes, self.state)
