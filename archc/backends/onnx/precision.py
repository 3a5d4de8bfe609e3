"""What quantization may touch: the decision per weight-consuming node, from the ops' precision rules.

Each node of the exported graph that consumes a weight (MatMul, Gemm, Gather, Conv, Einsum) reads
a weight whose state_dict key names an IR node and a parameter; that op's precision rule gives
the weight's class (its declared `Weight.cls`, `archc.passes.facts.graph_weights`), and the class — with the user's `--keep`
overrides — says whether the scheme's onnxruntime tool may quantize the node (`plan`). The rest of
the quantization stage (`quantize.py`, `calibrate.py`) only carries these decisions out.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import onnx
from onnx import helper

from archc.ir.graph import Graph
from archc.ir.weights import TensorClass
from archc.ops.registry import KEPT_BECAUSE, QUANTIZED_BY_DEFAULT
from archc.passes.facts import graph_weights

Scheme = Literal["none", "int8", "int8_dynamic", "int8_static", "int8_block", "int4"]
SCHEMES: tuple[str, ...] = ("int8", "int8_dynamic", "int8_static", "int8_block", "int4")
Method = Literal["minmax", "entropy", "percentile"]
METHODS: tuple[str, ...] = ("minmax", "entropy", "percentile")

#: MatMulNBits' default block per scheme. int4 32 (genai's model builder's). int8_block 64: its
#: activations are quantized per block too, so the block trades the outlier resilience that made
#: it Mamba's scheme against scale storage; on the trained mamba-tiny (tools/bench_compress.py
#: folders) blocks of 32 / 64 / 128 give 0.304 / 0.289 / 0.282× the fp32 size at 99.85 / 99.68 /
#: 99.51% top-1 — 64 is the smallest block under the 0.30× target.
DEFAULT_BLOCK = {"int4": 32, "int8_block": 64}

#: ONNX ops that consume a weight a quantizer can take, and the input that holds it.
WEIGHT_INPUT = {"MatMul": 1, "Gemm": 1, "Gather": 0, "Conv": 1, "Einsum": 1}
#: what each scheme's onnxruntime tool quantizes (Einsum: none of them)
#: (a plain Gemm — MoE experts — is made a MatMul first)
QUANTIZABLE = {"int8_dynamic": ("MatMul", "Gemm", "Gather"),
               "int8_static": ("MatMul", "Gemm", "Gather", "Conv"), "int8_block": ("MatMul", "Gemm", "Gather"),
               "int4": ("MatMul", "Gemm", "Gather")}
#: why a tool leaves an op type alone (shown in the plan)
UNSUPPORTED = {("int8_dynamic", "Conv"): "onnxruntime's dynamic Conv quantizer fails on a weight held outside the "
                                         "If branch (ValueError in operators/conv.py: measured on mamba-tiny)"}


class QuantizeError(Exception):
    def __init__(self, message: str, hint: str | None = None, code: str = "ARC1105") -> None:
        super().__init__(message)
        self.message, self.hint, self.code = message, hint, code


@dataclass(frozen=True)
class QuantizeOptions:
    """How to quantize. `overrides` maps a tensor class to True (quantize it) or False (keep it in
    fp32) over the defaults (`QUANTIZED_BY_DEFAULT`); `mixer_blind` ignores the rules and lets the
    tool quantize every node it can (the comparison row of docs/compression.md). `state` "int8"
    stores the decoder's KV caches in int8 (`state.py`); scheme "none" with it quantizes only them."""

    scheme: Scheme = "int8"
    method: Method = "minmax"
    overrides: tuple[tuple[str, bool], ...] = ()
    #: MatMulNBits' block along the input axis; None: the scheme's default (`DEFAULT_BLOCK`)
    block_size: int | None = None
    mixer_blind: bool = False
    state: Literal["fp32", "int8"] = "fp32"

    def block_for(self, scheme: str) -> int:
        return self.block_size or DEFAULT_BLOCK.get(scheme, 32)

    @property
    def quantizes_anything(self) -> bool:
        return self.scheme != "none" or self.state != "fp32"

    def quantizes(self, cls: str | None) -> bool:
        if self.mixer_blind:
            return True
        over = dict(self.overrides)
        if cls in over:
            return over[cls]
        return cls in QUANTIZED_BY_DEFAULT


def parse_keep(values: list[str]) -> tuple[tuple[str, bool], ...]:
    """`--keep fp32:router,norm --keep int8:conv` -> ((router, False), (norm, False), (conv, True))."""
    from typing import get_args

    classes = set(get_args(TensorClass))
    out = []
    for v in values:
        precision, _, names = v.partition(":")
        if precision not in ("fp32", "int8", "int4", "quantized") or not names:
            raise QuantizeError(f"--keep {v!r}: expected PRECISION:CLASS[,CLASS…] with PRECISION fp32 (keep) or "
                                "int8/int4/quantized (quantize)", "e.g. --keep fp32:router,norm", code="ARC1106")
        for name in names.split(","):
            if name not in classes:
                raise QuantizeError(f"--keep: unknown tensor class {name!r}",
                                    f"classes: {', '.join(sorted(classes))}", code="ARC1106")
            out.append((name, precision != "fp32"))
    return tuple(out)


# -- the plan: which node reads which weight, and what happens to it --------------------------


@dataclass
class WeightUse:
    """One weight-consuming node of the exported graph and the decision about it."""

    node: str
    op_type: str
    weight: str  # the state_dict key
    cls: str | None
    quantize: bool
    why: str


def walk(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for n in graph.node:
        yield n
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from walk(a.g)
            for g in a.graphs:
                yield from walk(g)


def plan(model: onnx.ModelProto, graph: Graph, options: QuantizeOptions) -> list[WeightUse]:
    """Every node that reads a model weight (directly or through a `Transpose`), with its class and
    whether the scheme's tool may quantize it."""
    weights = {i.name for i in model.graph.initializer if not i.name.startswith("const.")}
    producers = {o: n for n in walk(model.graph) for o in n.output}
    supported = QUANTIZABLE[tool_scheme(options.scheme)]
    declared = graph_weights(graph)
    uses = []
    for n in walk(model.graph):
        k = WEIGHT_INPUT.get(n.op_type)
        if k is None or len(n.input) <= k:
            continue
        name = n.input[k]
        src = producers.get(name)
        if src is not None and src.op_type == "Transpose" and src.input[0] in weights:
            name = src.input[0]
        if name not in weights:
            continue
        cls = declared[name].cls if name in declared else None
        if n.op_type not in supported:
            why = UNSUPPORTED.get((tool_scheme(options.scheme), n.op_type),
                                  f"onnxruntime's {options.scheme} tool does not quantize {n.op_type}")
            uses.append(WeightUse(n.name, n.op_type, name, cls, False, f"kept fp32: {why}"))
        elif n.op_type == "Gemm" and not _plain_gemm(n):
            uses.append(WeightUse(n.name, n.op_type, name, cls, False, "Gemm with alpha/beta/transA: left as is"))
        elif options.quantizes(cls):
            uses.append(WeightUse(n.name, n.op_type, name, cls, True,
                                  "rules off (mixer-blind)" if options.mixer_blind and cls not in QUANTIZED_BY_DEFAULT
                                  else "quantized"))
        else:
            over = dict(options.overrides)
            why = "--keep" if cls in over else KEPT_BECAUSE.get(cls or "", "no precision rule names it")
            uses.append(WeightUse(n.name, n.op_type, name, cls, False, f"kept fp32: {why}"))
    # A table that a quantized MatMul reads transposed (a tied head) and a Gather reads as is: the
    # lookup is rewritten to read the head's quantized copy (`share_tied_tables`), not quantized twice.
    through_matmul = {u.weight for u in uses if u.quantize and u.op_type == "MatMul"}
    for u in uses:
        if u.quantize and u.op_type == "Gather" and u.weight in through_matmul:
            u.quantize, u.why = False, "shared: reads the tied head's quantized weight"
        elif u.quantize and u.op_type == "Gather" and tool_scheme(options.scheme) == "int8_block":
            u.quantize, u.why = False, "kept fp32: onnxruntime's MatMulNBits quantizer makes 4-bit lookups only"
    return uses


def _plain_gemm(n: onnx.NodeProto) -> bool:
    a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
    return a.get("alpha", 1.0) == 1.0 and a.get("beta", 1.0) == 1.0 and not a.get("transA", 0)


def tool_scheme(scheme: str) -> str:
    return "int8_dynamic" if scheme == "int8" else scheme


@contextlib.contextmanager
def quiet_quantizer() -> Iterator[None]:
    """onnxruntime's quantizers log every node they skip at INFO on the root logger (1,000+ lines
    for a tiny model) and warn about pre-processing archc does not need: kept off the terminal."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    loggers = [logging.getLogger(n) for n in ("onnxruntime.quantization.matmul_nbits_quantizer", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its percentile calibrator prints its bins
            yield
    finally:
        root.setLevel(level)
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)



__all__ = ["METHODS", "SCHEMES", "QuantizeError", "QuantizeOptions", "WeightUse", "parse_keep", "plan",
           "quiet_quantizer"]
