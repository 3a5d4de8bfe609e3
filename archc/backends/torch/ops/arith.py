"""The IR's arithmetic in the torch backend: plain functions of the input tensors and the node's
parameters, run inline by the interpreter (no module, no weights). Every op of kind `arith` has
one; the interpreter refuses one that has none rather than guessing what it computes."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from archc.backends.lowering import register_lowering


@register_lowering("torch", "add")
def add(xs: list[Tensor], params: dict[str, Any]) -> Tensor:
    return xs[0] + xs[1]


@register_lowering("torch", "mul")
def mul(xs: list[Tensor], params: dict[str, Any]) -> Tensor:
    return xs[0] * xs[1]  # a [B, T, 1] gate broadcasts


@register_lowering("torch", "scale")
def scale(xs: list[Tensor], params: dict[str, Any]) -> Tensor:
    return xs[0] * params["by"]


@register_lowering("torch", "item")
def item(xs: list[Any], params: dict[str, Any]) -> Tensor:
    """One output of a node with several (its module returned a tuple)."""
    return xs[0][params["index"]]
