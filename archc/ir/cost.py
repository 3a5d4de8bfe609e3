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

from dataclasses import dataclass, field, replace
from typing import Literal

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


#: The symbolic state dimension bound to the context length a state is allocated for.
MAX_LEN = "max_len"

#: The initial value of a log-space stabilizer state (RWKV-4's running max, xLSTM's m): far below
#: any exponent, yet finite, so that max(m, x) and exp(m − x) never meet inf − inf.
NEG_FILL = -1e38

#: Bytes per element of each state dtype; `model` is the dtype the model runs in (a KV cache in
#: bf16 for a bf16 model), the costed dtype in `archc summary`.
STATE_DTYPE_BYTES = {"fp32": 4, "bool": 1}


@dataclass(frozen=True, slots=True)
class StateTensor:
    """One tensor of an op's inference state, per sequence (the batch dimension left out).

    This is the op record's declared state: `archc summary` costs it, the torch backend allocates
    it (`init_state`), the ONNX backend will name its graph inputs and outputs after it. A dimension
    is an int or `MAX_LEN`, the context length the state is allocated for, capped at `cap` (a
    sliding window's ring buffer holds `min(max_len, window)` slots). `fill` is the initial value,
    or the name of a parameter of the op each sequence starts from (RMT's memory tokens).
    """

    name: str
    shape: tuple[int | str, ...]
    dtype: Literal["fp32", "model", "bool"] = "fp32"
    fill: float | str = 0.0
    cap: int | None = None
    #: a cache of attention keys or values, one row per token (slot) with the head width last:
    #: the state `archc export --quantize-state int8` may store in int8 with one scale per row;
    #: every other state (recurrent, convolution windows, memories) stays fp32 (docs/compression.md)
    kv: bool = False

    def sizes(self, max_len: int) -> tuple[int, ...]:
        """The shape with `max_len` bound (and capped)."""
        bound = max_len if self.cap is None else min(max_len, self.cap)
        return tuple(bound if d == MAX_LEN else int(d) for d in self.shape)

    def numel(self, max_len: int) -> int:
        n = 1
        for s in self.sizes(max_len):
            n *= s
        return n

    def nbytes(self, max_len: int, model_bytes: int) -> int:
        return self.numel(max_len) * STATE_DTYPE_BYTES.get(self.dtype, model_bytes)

    def bound(self, max_len: int) -> StateTensor:
        """This tensor with `max_len` bound: every dimension an int."""
        return replace(self, shape=self.sizes(max_len), cap=None)

    def renamed(self, name: str) -> StateTensor:
        return replace(self, name=name)


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
