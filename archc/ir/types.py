"""Tensor types with symbolic dimensions.

A `Dim` is a concrete size (`int`) or a symbol (`str`): `batch` and `seq` for a model with one
input, `batch` and `seq_<input>` for every input of a model with several (an encoder–decoder's
source and target lengths differ). Symbols are bound to numbers only when a cost is asked for
(`archc summary --seq 4096 --batch 1`), so one IR describes every sequence length.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Dim = int | str
DType = Literal["float", "int"]


class TensorType(BaseModel):
    model_config = ConfigDict(frozen=True)

    shape: tuple[Dim, ...]
    dtype: DType = "float"

    @property
    def width(self) -> int:
        """The feature (last) dimension; hidden states always have a concrete width."""
        last = self.shape[-1]
        assert isinstance(last, int), f"symbolic feature dimension in {self}"
        return last

    @property
    def seq(self) -> Dim:
        """The sequence dimension of a [batch, seq, ...] tensor."""
        return self.shape[1]

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(str(d) for d in self.shape)}]"


class TupleType(BaseModel):
    """The value of a node with several outputs, read only through `item` nodes (torch.fx's
    `getitem`). A fused residual add + norm is one: it gives the normed tensor, and the sum goes
    on down the residual stream. Ops never take a tuple except `item`, so every other rule keeps
    reading `TensorType`s (the verifier checks both)."""

    model_config = ConfigDict(frozen=True)

    items: tuple[TensorType, ...]

    def __str__(self) -> str:
        return f"({', '.join(str(t) for t in self.items)})"


#: The type of an IR value: one tensor, or the tensors of a node with several outputs.
ValueType = TensorType | TupleType


def hidden(batch: Dim, seq: Dim, width: int) -> TensorType:
    """The type of a sequence of hidden states: float[batch, seq, width]."""
    return TensorType(shape=(batch, seq, width))


def resolve(dim: Dim, env: dict[str, int]) -> int:
    """A dimension's number once symbols are bound (`seq*` symbols all bind to `env['seq']`)."""
    if isinstance(dim, int):
        return dim
    if dim in env:
        return env[dim]
    if dim.startswith("seq"):
        return env["seq"]
    raise KeyError(dim)
