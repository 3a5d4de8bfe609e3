"""The IR verifier: the invariants every pass may assume and must keep (JAX's `check_jaxpr`,
tinygrad's `type_verify`). Run by the pass manager after every pass.

* every graph input is an `input` node, every output is defined;
* SSA order: a node reads only nodes defined before it (so no dangling or cyclic reads);
* every op is registered and its parameters satisfy its schema;
* types: each node's type is what its op's shape rule gives for its inputs' types;
* a node with several outputs (a `TupleType` value) is read only by `item` nodes, and only
  `item` reads one;
* every node has a source span (so any later diagnostic can point at the `.arch` line);
* weight ties name a node that exists, of the op the tie rule allows;
* bodies of higher-order ops verify on their own and map the op's input type to itself.
"""

from __future__ import annotations

from pydantic import ValidationError

from archc.errors import Span
from archc.ir.graph import Graph
from archc.ir.types import TensorType, TupleType
from archc.ops.registry import REGISTRY, ShapeError


class VerifyError(Exception):
    def __init__(self, message: str, node: str | None = None, span: Span | None = None) -> None:
        super().__init__(f"{node}: {message}" if node else message)
        self.message, self.node, self.span = message, node, span


def verify(graph: Graph, input_types: list[TensorType] | None = None, _root: Graph | None = None) -> None:
    """Raise `VerifyError` at the first broken invariant (see the module docstring)."""
    root = _root or graph
    for name in graph.inputs:
        n = graph.nodes.get(name)
        if n is None or n.op != "input":
            raise VerifyError(f"graph input `{name}` is not an `input` node", name)
    if input_types is not None and [graph.nodes[i].type for i in graph.inputs] != input_types:
        raise VerifyError(f"body inputs {[str(graph.nodes[i].type) for i in graph.inputs]} do not match the "
                          f"op's input {[str(t) for t in input_types]}", graph.inputs[0] if graph.inputs else None)
    defined: set[str] = set()
    for key, n in graph.nodes.items():
        if key != n.id:
            raise VerifyError(f"stored under `{key}` but named `{n.id}`", n.id, n.span)
        if n.span is None:
            raise VerifyError("has no source span", n.id)
        for i in n.inputs:
            if i not in defined:
                what = "is not defined" if i not in graph.nodes else "is defined after it"
                raise VerifyError(f"reads `{i}`, which {what}", n.id, n.span)
        op = REGISTRY.get(n.op)
        if op is None:
            raise VerifyError(f"unknown op `{n.op}`", n.id, n.span)
        if op.kind == "input" and n.id not in graph.inputs:
            raise VerifyError("an `input` node that is not among the graph's inputs", n.id, n.span)
        try:
            p = op.params(**n.params)
        except ValidationError as e:
            raise VerifyError(f"parameters do not satisfy `{n.op}`'s schema: {e.errors()[0]['msg']}", n.id,
                              n.span) from e
        ins = [graph.nodes[i].type for i in n.inputs]
        if (n.op == "item") != any(isinstance(t, TupleType) for t in ins):
            raise VerifyError("only `item` reads a node with several outputs, and it reads nothing else", n.id,
                              n.span)
        try:
            t = op.shape(p, ins)
        except ShapeError as e:
            raise VerifyError(f"its inputs do not type-check: {e.message}", n.id, n.span) from e
        if t != n.type:
            raise VerifyError(f"typed {n.type}, but `{n.op}` gives {t} for its inputs", n.id, n.span)
        for param, target in n.ties.items():
            owner = target.rsplit(".", 1)[0]
            if not any(m.id == owner for m in root.walk()):
                raise VerifyError(f"ties `{param}` to `{target}`, but there is no node `{owner}`", n.id, n.span)
        if op.takes_block != (n.body is not None):
            raise VerifyError("a body where the op takes none" if n.body is not None else
                              f"`{n.op}` wraps a block, but the node has no body", n.id, n.span)
        if n.body is not None:
            verify(n.body, ins[:1], root)
            out = n.body.nodes[n.body.outputs[0]].type
            if out != ins[0]:
                raise VerifyError(f"its body maps {ins[0]} to {out}", n.id, n.span)
        defined.add(n.id)
    for o in graph.outputs:
        if o not in graph.nodes:
            raise VerifyError(f"graph output `{o}` is not defined", o)
        if isinstance(graph.nodes[o].type, TupleType):
            raise VerifyError("a graph output with several values (read it through `item`)", o)
