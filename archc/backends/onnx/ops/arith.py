"""The IR's arithmetic as ONNX operators: `add` → `Add`, `mul` → `Mul`; `item` names one output
of a node with several and makes no ONNX node."""

from __future__ import annotations

from typing import Any

import onnx
from onnx import helper

from archc.backends.lowering import register_lowering
from archc.ir.graph import Node

Lowered = tuple[list[onnx.NodeProto], Any]


@register_lowering("onnx", "add")
def add(node: Node, ins: list[str], out: str) -> Lowered:
    return [helper.make_node("Add", ins, [out], name=out)], out


@register_lowering("onnx", "mul")
def mul(node: Node, ins: list[str], out: str) -> Lowered:
    return [helper.make_node("Mul", ins, [out], name=out)], out


@register_lowering("onnx", "item")
def item(node: Node, ins: list[Any], out: str) -> Lowered:
    return [], ins[0][node.params["index"]]
