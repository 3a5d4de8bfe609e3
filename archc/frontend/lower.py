"""AST -> Graph: name resolution, constant folding, block application, repeat/pattern expansion,
op-argument validation against the registry's schemas, and shape inference.

`ast_to_graph` collects every independent error (a failed expression evaluates to `Poison`, which
silently absorbs the errors it would otherwise cause downstream) and raises one `ArchError`.
The cost of lowering is linear in the number of nodes it creates; `Limits` bound that number
*before* a `repeat` is expanded, so `layers = 100000` is refused in microseconds.
"""

from __future__ import annotations

from typing import Any

from archc import ops as _ops  # noqa: F401  (registers the catalog)
from archc.dsl import ast
from archc.errors import Collector, Span
from archc.frontend.blocks import Blocks
from archc.frontend.calls import OpCalls
from archc.frontend.common import Abort, Limits, Scope, input_node
from archc.frontend.expressions import Expressions
from archc.frontend.statements import Statements
from archc.frontend.values import Poison, Tensor, describe
from archc.ir.graph import Graph, Node
from archc.ir.types import TensorType

__all__ = ["Limits", "Lowering", "ast_to_graph"]


class Lowering(Statements, Expressions, Blocks, OpCalls):
    """The lowering of one module: its state (diagnostics, scopes, node count) and the entry point;
    statements, expressions, blocks and op calls are the mixins' jobs, one file each."""

    def __init__(self, module: ast.Module, limits: Limits, sources: dict[str, str]) -> None:
        self.module = module
        self.limits = limits
        self.sources = sources
        self.diags = Collector()
        self.node_count = 0
        self.active_blocks: list[ast.BlockDef] = []
        self.embeds: list[Node] = []
        #: The latest node of each op, which a tie rule's target resolves to.
        self.latest: dict[str, Node] = {}
        self.scopes: list[Scope] = []
        self.stack_names: dict[tuple[int, str | None], int] = {}


    # ---- diagnostics ----
    def error(self, code: str, msg: str, span: Span | None, hint: str | None = None) -> Poison:
        self.diags.error(code, msg, span, hint)
        return Poison()


    # ---- nodes ----
    @property
    def scope(self) -> Scope:
        return self.scopes[-1]


    def fresh_id(self, base: str) -> str:
        s = self.scope
        key = s.prefix + base
        n = s.counters.get(key, 0)
        s.counters[key] = n + 1
        node_id = key if n == 0 else f"{key}_{n}"
        while node_id in s.graph.nodes:
            n += 1
            s.counters[key] = n + 1
            node_id = f"{key}_{n}"
        return node_id


    def add_node(self, base: str, op: str, inputs: list[Tensor], params: dict[str, Any], out: TensorType,
                 span: Span, body: Graph | None = None) -> Tensor:
        self.node_count += 1
        if self.node_count > self.limits.max_nodes:
            self.error("ARC0602", f"the spec lowers to more than {self.limits.max_nodes:,} nodes", span,
                       "raise the limit with --max-nodes if this is intended")
            raise Abort
        node = Node(id=self.fresh_id(base), op=op, inputs=tuple(t.node for t in inputs), params=params,
                    type=out, span=span, blocks=self.scope.blocks, body=body)
        self.scope.graph.add(node)
        return Tensor(node.id, out)


    # ---- entry point ----
    def lower(self) -> Graph:
        env: dict[str, Any] = {}
        model: ast.ModelDef | None = None
        for item in self.module.items:
            if isinstance(item, ast.ModelDef):
                if model is not None:
                    self.error("ARC0406", f"a spec holds one model; `{item.name}` is a second one", item.span,
                               "put each model in its own file and share blocks with `include`")
                    continue
                model = item
            else:
                self.top_level(item, env, self.module.path, depth=0, seen=(self.module.path,))
        if model is None:
            if not self.diags.has_errors:
                self.error("ARC0405", "the spec defines no model", Span(self.module.path, 1, 1, 1, 1),
                           "add `model name(tokens) { ... return ... }`")
            self.diags.raise_if_errors()
        assert model is not None
        graph = Graph(name=model.name)
        self.scopes.append(Scope(graph, "", ()))
        for name in model.inputs:
            if name in graph.nodes:
                self.error("ARC0408", f"input `{name}` is declared twice", model.span)
                continue
            seq = "seq" if len(model.inputs) == 1 else f"seq_{name}"
            node = graph.add(input_node(name, TensorType(shape=("batch", seq), dtype="int"), model.span))
            graph.inputs.append(node.id)
            env[name] = Tensor(node.id, node.type)
        try:
            outs = self.run_body(model.body, env, model.span, allow_sections=True, graph=graph)
        except Abort:
            self.diags.raise_if_errors()
            raise
        if outs is None:
            self.error("ARC0405", f"model `{model.name}` has no `return`", model.span,
                       "end the model with `return <outputs>`")
        else:
            for v, span in outs:
                if isinstance(v, Tensor):
                    if v.node in graph.outputs:
                        self.error("ARC0409", "the same value is returned twice", span)
                    graph.outputs.append(v.node)
                elif not isinstance(v, Poison):
                    self.error("ARC0302", f"a model returns tensors, not {describe(v)}", span)
        self.diags.raise_if_errors()  # unused-value warnings after errors would mostly be cascades
        self.check_unused(graph, model)
        self.check_params(graph, model.span)
        self.diags.raise_if_errors()
        return graph


    def check_params(self, graph: Graph, span: Span) -> None:
        from archc.ir.cost import CostCtx
        from archc.passes.estimate_cost import node_cost

        ctx = CostCtx(seq=2048)
        total = sum(node_cost(graph, n, ctx, with_state=False).params for n in graph.nodes.values())
        if total > self.limits.max_params:
            self.error("ARC0601", f"the model has {total:,} parameters, past the limit of "
                       f"{self.limits.max_params:,}", span, "raise the limit with --max-params if this is intended")


    def check_unused(self, graph: Graph, model: ast.ModelDef) -> None:
        used = {i for n in graph.nodes.values() for i in n.inputs} | set(graph.outputs)
        for n in graph.nodes.values():
            if n.id not in used:
                what = f"input `{n.id}`" if n.op == "input" else f"the result of `{n.op}` ({n.id})"
                self.diags.warning("ARC0501", f"{what} is never used", n.span,
                                   "use it, return it, or remove it")


def ast_to_graph(module: ast.Module, limits: Limits | None = None,
                 sources: dict[str, str] | None = None) -> tuple[Graph, list]:
    """Lower a parsed module; returns the graph and the warnings. Raises ArchError on errors."""
    low = Lowering(module, limits or Limits(), sources if sources is not None else {})
    graph = low.lower()
    return graph, [d for d in low.diags.items if d.severity == "warning"]
