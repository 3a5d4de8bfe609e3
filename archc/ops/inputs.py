"""Graph inputs: a model's token ids, and the hidden states a higher-order op's body receives.

`input` is an ordinary registered op so that every stage treats every node alike (its type comes
from its parameters by the same shape rule machinery); only the lowering creates it — a spec
declares inputs in `model name(tokens, ...)`, it never calls `input(...)`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archc.ir.types import Dim, TensorType
from archc.ops.registry import OpDef, Params, no_cost, register


class InputParams(Params):
    dtype: Literal["int", "float"] = Field("int", description="token ids (int) or hidden states (float)")
    shape: tuple[Dim, ...] = Field(("batch", "seq"), description="dimensions; symbols such as `seq` stay free")


def _input_shape(p: InputParams, ins: list[TensorType]) -> TensorType:
    return TensorType(shape=p.shape, dtype=p.dtype)


register(OpDef(name="input", params=InputParams, shape=_input_shape, cost=no_cost,
               summary="A graph input: the model's token ids, or the hidden states entering a wrapped block.", inputs=(),
               role="input"))
