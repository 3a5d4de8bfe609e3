"""Op calls: arguments matched to the op's tensor inputs and schema, pydantic's errors turned into
diagnostics at the argument, shapes typed by the shape pass's rule, weight ties resolved.

A mixin of `Lowering` (`lower.py`): it uses the lowering's diagnostics, scopes and nodes."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from archc.dsl import ast
from archc.errors import Span, did_you_mean
from archc.frontend.common import pydantic_message
from archc.frontend.values import Block, OpSpec, Pattern, Poison, Repeat, Tensor, describe
from archc.ops.registry import OpDef, ShapeError
from archc.passes.infer_shapes import node_type


class OpCalls:
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
                if allowed is None or v.op not in allowed:
                    return self.error("ARC0202", f"`{k}` does not take an op spec like `{v.op}(...)`"
                                      if allowed is None else f"`{k}` takes {' or '.join(f'`{a}`' for a in allowed)}"
                                      f", not `{v.op}`", span)
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
            return self.error("ARC0304", f"`{op.name}` is a {op.role} scheme, not a layer", e.span,
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
                    self.error("ARC0202", f"`{op.name}` argument `{loc}`: {pydantic_message(item)}" if loc else
                               f"`{op.name}`: {pydantic_message(item)}", sp)
            return None
