"""Expressions: constants folded, names resolved, arithmetic on constants, `+`/`*` on tensors,
and calls dispatched to ops, blocks, layer stacks or section functions.

A mixin of `Lowering` (`lower.py`): it uses the lowering's diagnostics, scopes and nodes."""

from __future__ import annotations

import math
import operator
from typing import Any

from archc.dsl import ast
from archc.errors import Span, did_you_mean
from archc.frontend.common import BUILTINS, MAX_INT, MAX_STRING
from archc.frontend.values import Block, Pattern, Poison, Repeat, SectionCall, Tensor, describe
from archc.ops.registry import REGISTRY, ShapeError
from archc.passes.infer_shapes import node_type


class Expressions:
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
            tensor, other = (a, b) if isinstance(a, Tensor) else (b, a)
            number = isinstance(other, int | float) and not isinstance(other, bool)
            if number and (e.op == "*" or (e.op == "/" and tensor is a)):
                if e.op == "/" and other == 0:
                    return self.error("ARC0402", "division by zero", e.span)
                by = float(other) if e.op == "*" else 1.0 / other
                op = REGISTRY["scale"]
                return self.add_node("scale", "scale", [tensor], {"by": by}, node_type(op, op.params(by=by),
                                                                                 [tensor.type]), e.span)
            return self.error("ARC0202", f"cannot combine a tensor with {describe(other)} using `{e.op}`", e.span,
                              "a tensor combines with a tensor (`+`, `*`) or scales by a number (`x * 0.5`, "
                              "`x / 8`)")
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
