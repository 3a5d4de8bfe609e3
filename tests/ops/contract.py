"""What every op record must satisfy, checked family by family (each `test_<family>.py` runs
`check_contract` over the ops its family file registers), and small helpers for the rules."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from pydantic import ValidationError

from archc.ir.cost import CostCtx, StateTensor
from archc.ir.types import TensorType, hidden
from archc.ir.weights import parameter_count
from archc.ops import REGISTRY
from archc.ops.registry import OpDef, ShapeError, no_loss

X = hidden("batch", "seq", 64)


def ops_of(family: str) -> list[str]:
    """The ops registered by `archc/ops/<family>.py`."""
    return sorted(n for n, op in REGISTRY.items() if op.params.__module__ == f"archc.ops.{family}")


def record(name: str) -> OpDef:
    return REGISTRY[name]


def params(name: str, **kw: Any) -> Any:
    return REGISTRY[name].params(**kw)


def shape_error(name: str, ins: list[TensorType] | None = None, **kw: Any) -> ShapeError:
    with pytest.raises(ShapeError) as info:
        REGISTRY[name].shape(params(name, **kw), ins or [X])
    return info.value


def state(name: str, ins: list[TensorType] | None = None, **kw: Any) -> tuple[StateTensor, ...]:
    return REGISTRY[name].state(params(name, **kw), ins or [X])


def check_contract(name: str) -> None:
    op = REGISTRY[name]
    with pytest.raises(ValidationError) as info:
        op.params(definitely_not_a_parameter=1)
    # the unknown key itself is refused, not merely a required parameter found missing
    assert any(e["type"] == "extra_forbidden" and e["loc"] == ("definitely_not_a_parameter",)
               for e in info.value.errors())
    assert op.summary.endswith(".")
    assert op.cost.__doc__ or op.kind != "layer", f"{name}: the cost rule needs a docstring stating its formula"
    assert op.role in ("input", "embedding", "position", "mixer", "ffn", "norm", "head", "wrapper", "arith",
                       "activation", "misc")
    if op.role == "mixer":
        assert op.kind == "layer"
    if op.role == "head":  # a head says what it trains on; nothing else does
        assert op.loss is not no_loss, f"{name}: a head needs a loss rule"
    else:
        assert op.loss is no_loss, f"{name}: only heads imply a loss"


def cost(name: str, ins: list[TensorType] | None = None, seq: int = 128, **kw: Any):
    """The op's cost rule with its parameters counted from its declared weights (as the cost
    pass counts them)."""
    op = REGISTRY[name]
    p = params(name, **kw)
    ins = ins or [X]
    c = op.cost(p, ins, op.shape(p, ins), CostCtx(seq=seq))
    return replace(c, params=parameter_count(op.weights(p, ins)))
