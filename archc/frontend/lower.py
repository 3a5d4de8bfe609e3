"""AST -> Graph: name resolution, constant folding, block application, repeat/pattern expansion,
op-argument validation against the registry's schemas, and shape inference.

`ast_to_graph` collects every independent error (a failed expression evaluates to `Poison`, which
silently absorbs the errors it would otherwise cause downstream) and raises one `ArchError`.
The cost of lowering is linear in the number of nodes it creates; `Limits` bound that number
*before* a `repeat` is expanded, so `layers = 100000` is refused in microseconds.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from archc import ops as _ops  # noqa: F401  (registers the catalog)
from archc.dsl import ast
from archc.errors import ArchError, Collector, Span, did_you_mean
from archc.frontend.values import Block, OpSpec, Pattern, Poison, Repeat, SectionCall, Tensor, describe
from archc.ir.graph import Graph, Node
from archc.ir.sections import SECTIONS
from archc.ir.types import TensorType
from archc.ops.registry import REGISTRY, OpDef, ShapeError
from archc.passes.infer_shapes import node_type

BUILTINS = ("repeat", "pattern")
MAX_INT = 2**63 - 1
MAX_STRING = 100_000
MAX_INCLUDE_DEPTH = 16


@dataclass(frozen=True)
class Limits:
    """Resource guards; a spec past them is refused with a diagnostic naming the limit."""

    max_nodes: int = 200_000
    max_params: int = 10**13
    max_layers: int = 100_000


class _Abort(Exception):
    """A resource limit was hit: stop lowering at once (the diagnostic is already recorded)."""


@dataclass
class _Scope:
    graph: Graph
    prefix: str  # node-id prefix, "" or "layers.3."
    blocks: tuple[str, ...]
    counters: dict[str, int] = field(default_factory=dict)


class Lowering:
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
        self.scopes: list[_Scope] = []
        self.stack_names: dict[tuple[int, str | None], int] = {}

    # ---- diagnostics ----
    def error(self, code: str, msg: str, span: Span | None, hint: str | None = None) -> Poison:
        self.diags.error(code, msg, span, hint)
        return Poison()

    # ---- nodes ----
    @property
    def scope(self) -> _Scope:
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
            raise _Abort
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
        self.scopes.append(_Scope(graph, "", ()))
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
        except _Abort:
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

    # ---- includes and top-level items ----
    def top_level(self, item: ast.Stmt, env: dict[str, Any], file: str, depth: int, seen: tuple[str, ...]) -> None:
        if isinstance(item, ast.Include):
            self.include(item, env, file, depth, seen)
        elif isinstance(item, ast.Assign):
            v = self.eval(item.value, env)
            if isinstance(v, Tensor):
                self.error("ARC0302", "top-level definitions are constants; tensors live inside a model", item.span)
            env[item.name] = v
        elif isinstance(item, ast.BlockDef):
            env[item.name] = Block(item, env.copy())
        elif isinstance(item, ast.ModelDef):
            self.error("ARC0705", "an included file may define blocks and constants, not a model", item.span)
        elif isinstance(item, ast.Section):
            self.error("ARC0410", f"`{item.kind}` sections go inside the model", item.span)

    def include(self, inc: ast.Include, env: dict[str, Any], file: str, depth: int, seen: tuple[str, ...]) -> None:
        from archc.dsl.parser import MAX_FILE_BYTES, parse

        root = Path(self.module.path).resolve().parent
        raw = Path(inc.path)
        if raw.is_absolute() or inc.path.startswith("~"):
            self.error("ARC0701", f"include path `{inc.path}` is absolute", inc.span,
                       "includes are relative to the including file and stay inside the spec's folder")
            return
        target = (Path(file).resolve().parent / raw).resolve()
        if root != target and root not in target.parents:
            self.error("ARC0701", f"include `{inc.path}` leaves the spec's folder tree ({root})", inc.span,
                       "includes may only reach files in the main spec's folder or below it")
            return
        if depth + 1 > MAX_INCLUDE_DEPTH:
            self.error("ARC0704", f"includes nested deeper than {MAX_INCLUDE_DEPTH}", inc.span)
            return
        if str(target) in seen:
            self.error("ARC0703", f"include cycle: {' -> '.join(Path(s).name for s in (*seen, str(target)))}",
                       inc.span, "remove one of the includes")
            return
        if not target.is_file():
            self.error("ARC0702", f"included file `{inc.path}` not found", inc.span)
            return
        if target.stat().st_size > MAX_FILE_BYTES:
            self.error("ARC0105", f"included file `{inc.path}` is larger than {MAX_FILE_BYTES:,} bytes", inc.span)
            return
        try:
            text = target.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            self.error("ARC0702", f"cannot read included file `{inc.path}`: {e}", inc.span)
            return
        shown = str(Path(file).parent / raw) if not Path(file).is_absolute() else str(target)
        self.sources[shown] = text
        try:
            sub = parse(text, shown)
        except ArchError as e:
            self.diags.extend(e.diagnostics)
            return
        for item in sub.items:
            self.top_level(item, env, str(target), depth + 1, (*seen, str(target)))

    # ---- statements ----
    def run_body(self, body: tuple[ast.Stmt, ...], env: dict[str, Any], span: Span,
                 allow_sections: bool = False, graph: Graph | None = None) -> list[tuple[Any, Span]] | None:
        result: list[tuple[Any, Span]] | None = None
        for stmt in body:
            if result is not None and not isinstance(stmt, ast.Section):
                self.error("ARC0410", "only deployment sections may follow `return`", stmt.span,
                           "move this statement before the `return`")
                continue
            if isinstance(stmt, ast.Assign):
                env[stmt.name] = self.eval(stmt.value, env)
            elif isinstance(stmt, ast.BlockDef):
                env[stmt.name] = Block(stmt, env.copy())
            elif isinstance(stmt, ast.Return):
                result = [(self.eval(e, env), e.span) for e in stmt.values]
            elif isinstance(stmt, ast.Section):
                if not allow_sections:
                    self.error("ARC0410", f"`{stmt.kind}` sections go at the model's top level", stmt.span)
                else:
                    assert graph is not None
                    self.section(stmt, env, graph)
            elif isinstance(stmt, ast.Include):
                self.error("ARC0410", "`include` goes at the top of the file", stmt.span)
            elif isinstance(stmt, ast.ModelDef):
                self.error("ARC0406", "models cannot be nested", stmt.span)
        return result

    def section(self, sec: ast.Section, env: dict[str, Any], graph: Graph) -> None:
        key = sec.kind if sec.name is None else f"{sec.kind}.{sec.name}"
        if key in graph.sections:
            self.error("ARC0410", f"section `{key}` appears twice", sec.span)
            return
        values: dict[str, Any] = {}
        spans: dict[str, Span] = {}
        for a in sec.items:
            v = self.eval(a.value, env, in_section=True)
            if isinstance(v, Poison):
                return
            values[a.name] = v.as_param() if isinstance(v, SectionCall) else v
            spans[a.name] = a.span
        if sec.kind == "export":
            values.setdefault("target", sec.name or "onnx")
        schema = SECTIONS[sec.kind]
        try:
            graph.sections[key] = schema(**values).model_dump()
        except ValidationError as e:
            for err in e.errors():
                loc = str(err["loc"][0]) if err["loc"] else ""
                span = spans.get(loc, sec.span)
                if err["type"] == "extra_forbidden":
                    self.error("ARC0201", f"`{sec.kind}` has no setting `{loc}`", span,
                               did_you_mean(loc, list(schema.model_fields)))
                else:
                    self.error("ARC0202", f"`{sec.kind}.{loc}`: {_pyd_msg(err)}", span)

    # ---- expressions ----
    def eval(self, e: ast.Expr, env: dict[str, Any], in_section: bool = False) -> Any:
        if isinstance(e, ast.Int):
            if e.value > MAX_INT:
                return self.error("ARC0402", "integer literal too large", e.span)
            return e.value
        if isinstance(e, ast.Float):
            return e.value
        if isinstance(e, ast.Size):
            return e.bytes
        if isinstance(e, ast.String):
            return e.value
        if isinstance(e, ast.Bool):
            return e.value
        if isinstance(e, ast.NoneLit):
            return None
        if isinstance(e, ast.Name):
            return self.lookup(e, env)
        if isinstance(e, ast.List):
            items = [self.eval(i, env, in_section) for i in e.items]
            for i, v in zip(e.items, items, strict=True):
                if isinstance(v, Poison):
                    return v
                if isinstance(v, Tensor | Block | Repeat | Pattern):
                    return self.error("ARC0202", f"lists hold constants, not {describe(v)}", i.span)
            return items
        if isinstance(e, ast.Neg):
            v = self.eval(e.operand, env, in_section)
            if isinstance(v, Poison):
                return v
            if isinstance(v, bool) or not isinstance(v, int | float):
                return self.error("ARC0202", f"cannot negate {describe(v)}", e.span)
            return -v
        if isinstance(e, ast.BinOp):
            return self.binop(e, env, in_section)
        if isinstance(e, ast.Call):
            return self.call(e, env, in_section)
        raise AssertionError(f"unknown expression {e!r}")

    def lookup(self, e: ast.Name, env: dict[str, Any]) -> Any:
        if e.id in env:
            return env[e.id]
        if e.id in REGISTRY or e.id in BUILTINS:
            return self.error("ARC0403", f"`{e.id}` is an op; call it", e.span, f"write `{e.id}(...)`")
        hint = did_you_mean(e.id, list(env))
        return self.error("ARC0401", f"unknown name `{e.id}`", e.span, hint or "define it with `name = ...` first")

    def binop(self, e: ast.BinOp, env: dict[str, Any], in_section: bool) -> Any:
        a = self.eval(e.left, env, in_section)
        b = self.eval(e.right, env, in_section)
        if isinstance(a, Poison) or isinstance(b, Poison):
            return Poison()
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            if e.op not in ("+", "*"):
                return self.error("ARC0202", f"tensors combine with `+` (residual) or `*` (gating), not `{e.op}`",
                                  e.span)
            op = REGISTRY["add" if e.op == "+" else "mul"]
            try:
                out = node_type(op, op.params(), [a.type, b.type])
            except ShapeError as err:
                return self.error(err.code, err.message, e.span, err.hint)
            return self.add_node(op.name, op.name, [a, b], {}, out, e.span)
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            other = b if isinstance(a, Tensor) else a
            return self.error("ARC0202", f"cannot combine a tensor with {describe(other)} using `{e.op}`", e.span,
                              "tensors combine only with tensors of the same shape; scale inside an op instead")
        if isinstance(a, str) and isinstance(b, int) and not isinstance(b, bool) and e.op == "*":
            if b < 0 or len(a) * b > MAX_STRING:
                return self.error("ARC0402", f"string repetition gives more than {MAX_STRING:,} characters", e.span)
            return a * b
        if isinstance(a, str) and isinstance(b, str) and e.op == "+":
            if len(a) + len(b) > MAX_STRING:
                return self.error("ARC0402", f"string longer than {MAX_STRING:,} characters", e.span)
            return a + b
        if isinstance(a, list) and isinstance(b, list) and e.op == "+":
            return a + b
        num = (int, float)
        if not (isinstance(a, num) and isinstance(b, num)) or isinstance(a, bool) or isinstance(b, bool):
            return self.error("ARC0202", f"cannot apply `{e.op}` to {describe(a)} and {describe(b)}", e.span)
        return self.arith(e, a, b)

    def arith(self, e: ast.BinOp, a: float, b: float) -> Any:
        if e.op in ("/", "//", "%") and b == 0:
            return self.error("ARC0402", "division by zero", e.span)
        if e.op == "**":
            if abs(a) > 1 and abs(b) * math.log2(abs(a)) > 63:
                return self.error("ARC0402", "constant too large (more than 2^63)", e.span)
            if a == 0 and b < 0:
                return self.error("ARC0402", "division by zero", e.span)
        fns = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
               "//": operator.floordiv, "%": operator.mod, "**": operator.pow}
        try:
            r = fns[e.op](a, b)
        except (OverflowError, ZeroDivisionError, ValueError) as err:
            return self.error("ARC0402", f"arithmetic error: {err}", e.span)
        if isinstance(r, complex):
            return self.error("ARC0402", "the result is not a real number", e.span)
        if isinstance(r, int) and abs(r) > MAX_INT:
            return self.error("ARC0402", "constant too large (more than 2^63)", e.span)
        if isinstance(r, float) and not math.isfinite(r):
            return self.error("ARC0402", "the result is not finite", e.span)
        return r

    # ---- calls ----
    def call(self, e: ast.Call, env: dict[str, Any], in_section: bool) -> Any:
        if isinstance(e.func, ast.Name) and e.func.id not in env:
            name = e.func.id
            if name in BUILTINS:
                return self.builtin(name, e, env)
            if name in REGISTRY and REGISTRY[name].kind == "input":
                return self.error("ARC0403", "`input` is not called: a model declares its inputs", e.func.span,
                                  "write `model name(tokens) { ... }`")
            if name in REGISTRY:
                return self.op_call(REGISTRY[name], e, env)
            if in_section:
                return self.section_call(e, env)
            hint = did_you_mean(name, [*REGISTRY, *env, *BUILTINS])
            return self.error("ARC0401", f"unknown op or block `{name}`", e.func.span,
                              hint or "`archc ops` lists the ops; blocks must be defined before use")
        callee = self.eval(e.func, env, in_section)
        if isinstance(callee, Poison):
            self.eval_args(e, env)
            return callee
        if isinstance(callee, Block):
            return self.block_call(callee, e, env)
        if isinstance(callee, Repeat | Pattern):
            args, kwargs = self.eval_args(e, env)
            if args is None:
                return Poison()
            if kwargs:
                return self.error("ARC0201", "a layer stack takes tensors only", e.kwargs[0].span,
                                  "pass settings to the block: repeat(n, block, key=value)")
            return self.apply(callee, args, {}, e.span)
        return self.error("ARC0403", f"{describe(callee)} is not callable", e.func.span)

    def eval_args(self, e: ast.Call, env: dict[str, Any]) -> tuple[list[tuple[Any, Span]] | None, dict[str, tuple[Any, Span]]]:
        args = [(self.eval(a, env), a.span) for a in e.args]
        kwargs: dict[str, tuple[Any, Span]] = {}
        for kw in e.kwargs:
            if kw.name in kwargs:
                self.error("ARC0201", f"argument `{kw.name}` given twice", kw.span)
            kwargs[kw.name] = (self.eval(kw.value, env), kw.span)
        if any(isinstance(v, Poison) for v, _ in (*args, *kwargs.values())):
            return None, kwargs
        return args, kwargs

    def section_call(self, e: ast.Call, env: dict[str, Any]) -> Any:
        assert isinstance(e.func, ast.Name)
        args = [self.eval(a, env, True) for a in e.args]
        kwargs = {k.name: self.eval(k.value, env, True) for k in e.kwargs}
        if any(isinstance(v, Poison) for v in (*args, *kwargs.values())):
            return Poison()
        return SectionCall(e.func.id, tuple(args), kwargs)

    def builtin(self, name: str, e: ast.Call, env: dict[str, Any]) -> Any:
        args, kwargs = self.eval_args(e, env)
        if args is None:
            return Poison()
        stack_name = kwargs.pop("name", (None, e.span))[0]
        if stack_name is not None and (not isinstance(stack_name, str) or not stack_name.isidentifier()):
            return self.error("ARC0202", "name= takes an identifier string", e.span)
        if name == "repeat":
            if len(args) != 2:
                return self.error("ARC0201", f"repeat takes (count, block), got {len(args)} positional arguments",
                                  e.span, "write `repeat(layers, decoder)(x)`")
            (n, n_span), (blk, b_span) = args
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                return self.error("ARC0202", f"repeat count must be a positive integer, got {describe(n)}", n_span)
            if n > self.limits.max_layers:
                return self.error("ARC0602", f"repeat count {n:,} is past the limit of {self.limits.max_layers:,} layers",
                                  n_span, "raise it with --max-nodes if this is intended")
            if not isinstance(blk, Block | Repeat | Pattern):
                return self.error("ARC0202", f"repeat needs a block, got {describe(blk)}", b_span)
            if kwargs:
                if not isinstance(blk, Block):
                    return self.error("ARC0201", "settings can only be bound to a block", e.span)
                blk = self.bind(blk, kwargs)
                if blk is None:
                    return Poison()
            return Repeat(n, blk, stack_name, e.span)
        # pattern
        if len(args) != 1 or not isinstance(args[0][0], str):
            return self.error("ARC0201", "pattern takes a layout string and one block per letter", e.span,
                              'write `pattern("MMMA" * 4, M=mamba_layer, A=attn_layer)(x)`')
        layout, l_span = args[0]
        if not layout:
            return self.error("ARC0202", "the pattern layout is empty", l_span)
        blocks: dict[str, Any] = {}
        for k, (v, span) in kwargs.items():
            if len(k) != 1:
                return self.error("ARC0201", f"pattern letters are single characters, got `{k}`", span)
            if not isinstance(v, Block | Repeat | Pattern):
                return self.error("ARC0202", f"pattern letter `{k}` needs a block, got {describe(v)}", span)
            blocks[k] = v
        missing = sorted(set(layout) - set(blocks))
        if missing:
            return self.error("ARC0401", f"pattern letter(s) {', '.join(repr(m) for m in missing)} have no block",
                              l_span, f"add {', '.join(f'{m}=<block>' for m in missing)}")
        unused = sorted(set(blocks) - set(layout))
        if unused:
            self.diags.warning("ARC0501", f"pattern letter(s) {', '.join(unused)} never appear in the layout", e.span)
        if len(layout) > self.limits.max_layers:
            return self.error("ARC0602", f"pattern of {len(layout):,} layers is past the limit", l_span)
        return Pattern(layout, blocks, stack_name, e.span)

    def bind(self, blk: Block, kwargs: dict[str, tuple[Any, Span]]) -> Block | None:
        names = [p.name for p in blk.defn.params]
        bound = dict(blk.bound)
        for k, (v, span) in kwargs.items():
            if k not in names:
                self.error("ARC0201", f"block `{blk.name}` has no parameter `{k}`", span, did_you_mean(k, names))
                return None
            bound[k] = v
        return Block(blk.defn, blk.closure, bound)

    def block_call(self, blk: Block, e: ast.Call, env: dict[str, Any]) -> Any:
        args, kwargs = self.eval_args(e, env)
        if args is None:
            return Poison()
        if not args:  # `decoder(window=64)`: bind settings, apply later
            return self.bind(blk, kwargs) or Poison()
        return self.apply(blk, args, kwargs, e.span)

    def apply(self, f: Block | Repeat | Pattern, args: list[tuple[Any, Span]], kwargs: dict[str, tuple[Any, Span]],
              span: Span, in_stack: bool = False) -> Any:
        """Apply a block or a layer stack to tensors; stacks thread their first argument."""
        if isinstance(f, Block):
            return self.apply_block(f, args, kwargs, span, in_stack)
        if not args or not isinstance(args[0][0], Tensor):
            return self.error("ARC0202", "a layer stack is applied to a tensor", span)
        layers = [f.block] * f.count if isinstance(f, Repeat) else [f.blocks[c] for c in f.layout]
        stack = self.stack_prefix(f.name, span)
        x = args[0][0]
        first_nodes = self.node_count
        for i, blk in enumerate(layers):
            if i and i & (i - 1) == 0:  # at layers 1, 2, 4, 8, ...: project the final node count
                per_layer = (self.node_count - first_nodes) / i
                if self.node_count + per_layer * (len(layers) - i) > self.limits.max_nodes:
                    self.error("ARC0602", f"{len(layers):,} layers of ~{per_layer:.0f} nodes each is past the "
                               f"limit of {self.limits.max_nodes:,} nodes", f.span,
                               "raise the limit with --max-nodes if this is intended")
                    raise _Abort
            s = self.scope
            self.scopes.append(_Scope(s.graph, f"{stack}.{i}.", s.blocks, s.counters))
            try:
                x = self.apply(blk, [(x, args[0][1]), *args[1:]], kwargs, span, in_stack=True)
            finally:
                self.scopes.pop()
            if isinstance(x, Poison):
                return x
            if not isinstance(x, Tensor):
                return self.error("ARC0202", f"layer {i} of the stack returned {describe(x)}, not a tensor", span)
        return x

    def stack_prefix(self, name: str | None, span: Span) -> str:
        s = self.scope
        base = s.prefix + (name or "layers")
        key = (id(s.graph), base)
        n = self.stack_names.get(key, 0)
        self.stack_names[key] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def apply_block(self, blk: Block, args: list[tuple[Any, Span]], kwargs: dict[str, tuple[Any, Span]],
                    span: Span, in_stack: bool) -> Any:
        d = blk.defn
        if d in self.active_blocks:
            chain = " -> ".join(b.name for b in (*self.active_blocks, d))
            return self.error("ARC0407", f"block `{d.name}` calls itself ({chain})", span,
                              "blocks cannot recurse; use repeat(n, block) for depth")
        params = [p.name for p in d.params]
        if len(args) > len(params):
            return self.error("ARC0201", f"block `{d.name}` takes {len(params)} arguments, got {len(args)}", span)
        local = dict(blk.closure)
        local.update(blk.bound)
        given = {p: v for p, (v, _) in zip(params, args, strict=False)}
        for k, (v, kspan) in kwargs.items():
            if k not in params:
                return self.error("ARC0201", f"block `{d.name}` has no parameter `{k}`", kspan,
                                  did_you_mean(k, params))
            if k in given:
                return self.error("ARC0201", f"argument `{k}` given twice", kspan)
            given[k] = v
        for p in d.params:
            if p.name in given:
                local[p.name] = given[p.name]
            elif p.name in blk.bound:
                pass
            elif p.default is not None:
                local[p.name] = self.eval(p.default, blk.closure)
            else:
                return self.error("ARC0201", f"block `{d.name}` is missing argument `{p.name}`", span)
        s = self.scope
        prefix = s.prefix if in_stack else f"{self.fresh_id(d.name)}."
        self.scopes.append(_Scope(s.graph, prefix, (*s.blocks, d.name), s.counters))
        self.active_blocks.append(d)
        try:
            outs = self.run_body(d.body, local, d.span)
        finally:
            self.active_blocks.pop()
            self.scopes.pop()
        if outs is None:
            return self.error("ARC0405", f"block `{d.name}` has no `return`", d.span)
        if len(outs) != 1:
            return self.error("ARC0405", f"block `{d.name}` returns {len(outs)} values; blocks return one", outs[1][1])
        return outs[0][0]

    def op_call(self, op: OpDef, e: ast.Call, env: dict[str, Any]) -> Any:
        args, kwargs = self.eval_args(e, env)
        if args is None:
            return Poison()
        tensor_slots = [*op.inputs, *op.optional_inputs]
        tensors: dict[str, tuple[Tensor, Span]] = {}
        params: dict[str, tuple[Any, Span]] = {}
        fields = list(op.params.model_fields)
        node_name: str | None = None
        block: tuple[Any, Span] | None = None
        pos_fields = iter(fields)
        for v, span in args:
            if isinstance(v, Tensor):
                if params:
                    return self.error("ARC0201", "tensor arguments come before settings", span)
                if len(tensors) >= len(tensor_slots):
                    return self.error("ARC0201", f"`{op.name}` takes {len(tensor_slots)} tensor argument(s)", span)
                tensors[tensor_slots[len(tensors)]] = (v, span)
            else:
                name = next(pos_fields, None)
                if name is None:
                    return self.error("ARC0201", f"too many positional arguments to `{op.name}`", span,
                                      "pass settings by name, e.g. heads=8")
                params[name] = (v, span)
        for k, (v, span) in kwargs.items():
            if k in tensor_slots:
                if not isinstance(v, Tensor):
                    return self.error("ARC0202", f"`{k}` takes a tensor, got {describe(v)}", span)
                tensors[k] = (v, span)
            elif k == "name":
                if not isinstance(v, str) or not v.isidentifier():
                    return self.error("ARC0202", "name= takes an identifier string", span)
                node_name = v
            elif k == "block" and op.takes_block:
                block = (v, span)
            elif k in fields:
                if k in params:
                    return self.error("ARC0201", f"argument `{k}` given twice", span)
                params[k] = (v, span)
            else:
                extra = ["block"] if op.takes_block else []
                return self.error("ARC0201", f"`{op.name}` has no argument `{k}`", span,
                                  did_you_mean(k, [*fields, *tensor_slots, *extra]) or
                                  f"`{op.name}` takes {', '.join([*tensor_slots, *fields, *extra])}")
        plain: dict[str, Any] = {}
        for k, (v, span) in params.items():
            if isinstance(v, OpSpec):
                allowed = op.components.get(k)
                cat = REGISTRY[v.op].category
                if allowed is None or cat not in allowed:
                    return self.error("ARC0202", f"`{k}` does not take an op spec like `{v.op}(...)`"
                                      if allowed is None else f"`{k}` takes a {' or '.join(allowed)} op, "
                                      f"not `{v.op}` ({cat})", span)
                plain[k] = v.as_param()
            elif isinstance(v, Tensor | Block | Repeat | Pattern):
                return self.error("ARC0202", f"`{k}` takes a value, got {describe(v)}", span)
            else:
                plain[k] = v
        if not tensors:
            if op.kind == "arith" or op.takes_block:
                return self.error("ARC0201", f"`{op.name}` needs a tensor argument", e.span)
            p = self.validate(op, plain, params, e.span)
            return Poison() if p is None else OpSpec(op.name, p.model_dump(), e.span)
        if op.kind == "component":
            return self.error("ARC0304", f"`{op.name}` is a {op.category} scheme, not a layer", e.span,
                              f"pass it to attention: attention(x, heads=..., pos={op.name}(...))")
        missing = [s for s in op.inputs if s not in tensors]
        if missing:
            return self.error("ARC0201", f"`{op.name}` is missing tensor argument `{missing[0]}`", e.span)
        ins = [tensors[s][0] for s in tensor_slots if s in tensors]
        for i in range(len(ins)):
            want_int = i in op.int_inputs
            if (ins[i].type.dtype == "int") != want_int:
                sp = tensors[tensor_slots[i]][1]
                if want_int:
                    return self.error("ARC0302", f"`{op.name}` takes token ids, got {ins[i].type}", sp)
                return self.error("ARC0302", f"`{op.name}` takes hidden states float[batch, seq, d], got "
                                  f"token ids {ins[i].type}", sp, "embed the tokens first: embed(tokens, vocab, d)")
        if op.name == "lm_head" and not self.resolve_lm_head(plain, ins[0], e.span):
            return Poison()
        p = self.validate(op, plain, params, e.span)
        if p is None:
            return Poison()
        body = None
        if op.takes_block:
            if block is None:
                return self.error("ARC0201", f"`{op.name}` wraps a block: pass block=<block>", e.span)
            body = self.lower_body(op, block, ins, e.span)
            if body is None:
                return Poison()
        try:
            out = node_type(op, p, [t.type for t in ins])
        except ShapeError as err:
            span = params[err.arg][1] if err.arg in params else e.span
            return self.error(err.code, f"{op.name}: {err.message}", span, err.hint)
        t = self.add_node(node_name or op.default_name, op.name, ins, p.model_dump(), out, e.span, body)
        node = self.scope.graph.nodes[t.node]
        self.latest[op.name] = node
        if op.name == "embed":
            self.embeds.append(node)
        ties = {own: f"{self.latest[target].id}.{param}" for own, (target, param) in op.ties(p).items()
                if target in self.latest}
        if ties:
            self.scope.graph.nodes[t.node] = node.model_copy(update={"ties": ties})
        return t

    def resolve_lm_head(self, plain: dict[str, Any], x: Tensor, span: Span) -> bool:
        if not plain.get("tied") and plain.get("vocab") is not None:
            return True
        if not self.embeds:
            self.error("ARC0201", "lm_head needs vocab= (there is no embedding to take it from)", span)
            return False
        emb = self.embeds[-1]
        if len({n.params["vocab"] for n in self.embeds}) > 1 and plain.get("vocab") is None:
            self.error("ARC0201", "several embeddings with different vocabularies: give lm_head vocab=", span)
            return False
        vocab = plain.get("vocab") or emb.params["vocab"]
        if plain.get("tied"):
            if vocab != emb.params["vocab"]:
                self.error("ARC0303", f"a tied lm_head has the embedding's vocabulary ({emb.params['vocab']}), "
                           f"not {vocab}", span)
                return False
            if x.type.dtype == "float" and len(x.type.shape) == 3 and x.type.width != emb.params["d"]:
                self.error("ARC0303", f"a tied lm_head needs width {emb.params['d']} (the embedding's), got "
                           f"{x.type.width}", span)
                return False
        plain["vocab"] = vocab
        return True

    def validate(self, op: OpDef, plain: dict[str, Any], spans: dict[str, tuple[Any, Span]], span: Span) -> Any:
        if op.components:
            for k, spec in plain.items():
                if k in op.components and isinstance(spec, str):
                    plain[k] = self.error("ARC0202", f"`{k}` takes an op spec such as `{k}=...(...)`", spans[k][1])
                    return None
        try:
            return op.params(**plain)
        except ValidationError as err:
            for item in err.errors():
                loc = str(item["loc"][0]) if item["loc"] else ""
                sp = spans[loc][1] if loc in spans else span
                if item["type"] == "missing":
                    self.error("ARC0201", f"`{op.name}` is missing argument `{loc}`", span,
                               f"add {loc}=..., see `archc ops {op.name}`")
                else:
                    self.error("ARC0202", f"`{op.name}` argument `{loc}`: {_pyd_msg(item)}" if loc else
                               f"`{op.name}`: {_pyd_msg(item)}", sp)
            return None

    def lower_body(self, op: OpDef, block: tuple[Any, Span], ins: list[Tensor], span: Span) -> Graph | None:
        blk, b_span = block
        if not isinstance(blk, Block | Repeat | Pattern):
            self.error("ARC0202", f"block= takes a block, got {describe(blk)}", b_span)
            return None
        body = Graph(name=f"{op.name}_body")
        x = body.add(input_node("x", ins[0].type, span))
        body.inputs.append(x.id)
        self.scopes.append(_Scope(body, "", self.scope.blocks))
        try:
            out = self.apply(blk, [(Tensor(x.id, x.type), b_span)], {}, span, in_stack=True)
        finally:
            self.scopes.pop()
        if isinstance(out, Poison):
            return None
        if not isinstance(out, Tensor) or out.type != ins[0].type:
            self.error("ARC0301", f"the block wrapped by `{op.name}` must map {ins[0].type} to the same type, "
                       f"got {describe(out)}", b_span)
            return None
        body.outputs.append(out.node)
        return body


def input_node(name: str, t: TensorType, span: Span) -> Node:
    """A graph input of type `t` (the model's token ids, a body's hidden states)."""
    return Node(id=name, op="input", params={"dtype": t.dtype, "shape": t.shape}, type=t, span=span)


def _pyd_msg(err: dict[str, Any]) -> str:
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], dict):
        msg += f" (got {err['input']!r})"
    return msg


def ast_to_graph(module: ast.Module, limits: Limits | None = None,
                 sources: dict[str, str] | None = None) -> tuple[Graph, list]:
    """Lower a parsed module; returns the graph and the warnings. Raises ArchError on errors."""
    low = Lowering(module, limits or Limits(), sources if sources is not None else {})
    graph = low.lower()
    return graph, [d for d in low.diags.items if d.severity == "warning"]
