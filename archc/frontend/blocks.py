"""Blocks and layer stacks: binding settings, applying a block (its own scope, no recursion),
`repeat`/`pattern` with the node-count projection that refuses huge stacks before expanding them,
and the body graph of a higher-order op.

A mixin of `Lowering` (`lower.py`): it uses the lowering's diagnostics, scopes and nodes."""

from __future__ import annotations

from typing import Any

from archc.dsl import ast
from archc.errors import Span, did_you_mean
from archc.frontend.common import Abort, Scope, input_node
from archc.frontend.values import Block, Pattern, Poison, Repeat, Tensor, describe
from archc.ir.graph import Graph
from archc.ops.registry import OpDef


class Blocks:
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
                    raise Abort
            s = self.scope
            self.scopes.append(Scope(s.graph, f"{stack}.{i}.", s.blocks, s.counters))
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
        self.scopes.append(Scope(s.graph, prefix, (*s.blocks, d.name), s.counters))
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


    def lower_body(self, op: OpDef, block: tuple[Any, Span], ins: list[Tensor], span: Span) -> Graph | None:
        blk, b_span = block
        if not isinstance(blk, Block | Repeat | Pattern):
            self.error("ARC0202", f"block= takes a block, got {describe(blk)}", b_span)
            return None
        body = Graph(name=f"{op.name}_body")
        x = body.add(input_node("x", ins[0].type, span))
        body.inputs.append(x.id)
        self.scopes.append(Scope(body, "", self.scope.blocks))
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
