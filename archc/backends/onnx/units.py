"""One IR node's torch module exported to ONNX once, for every node that shares its signature.

The torch module is the one implementation of an op's numerics; the ONNX graph of a node is what
`torch.onnx.export(dynamo=True)` makes of that module's `step` (decoders) or `forward` (encoders).
Exporting the whole model at once costs minutes for the scan-heavy mixers (the chunk loops of
every layer traced again, docs/onnx.md); here each distinct node — same op, parameters, input
types and state — is exported once and `assemble.py` places a copy of its graph for every node
that shares it, binding the copy to that node's weights. Export time grows with the number of
distinct layers, not with depth.

A unit's graph has inputs `positions` (int64 [T], absent for ops on another time axis, which
count from 0), then the node's tensor inputs `in_0 …`, then (forward units of the main axis)
`attention_mask` (bool [B, T]) and `token_type_ids`, then the state `state_0 …`; outputs `out`
(`out_0 …` for a node with several outputs) and the new state `new_0 …`. Its initializers named `m.<param>` are the module's own tensors and
`tied.<i>.<param>` those of the modules its ties read; the assembler renames both to the model's
state_dict keys and takes each node's own values. Any other initializer is a constant of the
traced code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import onnx
import onnx_ir as ir
import torch
from torch import Tensor, nn
from torch.export import Dim

from archc.backends.torch.context import Context
from archc.backends.torch.module import OpModule
from archc.ir.types import TensorType

#: decode: one token from a state (the recurrent form); prefill: many tokens from a state (the
#: chunked form, T ≥ 2); forward: the whole sequence, no state (encoders, classifiers).
Mode = Literal["decode", "prefill", "forward"]

#: Example sizes the units are traced at; every one of them is dynamic in the exported graph.
EXAMPLE_BATCH, EXAMPLE_SEQ, EXAMPLE_CACHE = 2, 8, 64
MAX_DIM = 1 << 20


@dataclass(frozen=True)
class UnitSpec:
    """What a unit's graph depends on: nodes with equal specs share one exported graph."""

    op: str
    params: str  # canonical JSON
    in_types: tuple[TensorType, ...]
    state_shapes: tuple[tuple[int, ...], ...]
    mode: Mode
    main_axis: bool
    masked: bool
    token_types: bool
    #: How many values the node makes (a fused residual add + norm: the normed value and the sum).
    outputs: int = 1

    @property
    def key(self) -> str:
        text = json.dumps([self.op, self.params, [str(t) for t in self.in_types], self.state_shapes,
                           self.mode, self.main_axis, self.masked, self.token_types, self.outputs])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Unit(nn.Module):
    """A node's module as a function of plain tensors (what `torch.onnx.export` takes)."""

    def __init__(self, mod: OpModule, spec: UnitSpec, owners: list[nn.Module]) -> None:
        super().__init__()
        self.m = mod
        self.spec = spec
        # the modules whose weights this node's ties read (a tied lm_head's embedding): registered
        # here, their tensors export as initializers `tied.<i>.<name>`, not as anonymous constants
        self.tied = nn.ModuleList(owners)

    def forward(self, *args: Tensor) -> tuple[Tensor, ...]:
        spec, args = self.spec, list(args)
        positions = args.pop(0) if spec.main_axis else None
        n_in = len(spec.in_types)
        xs, rest = args[:n_in], args[n_in:]
        if positions is None:
            positions = torch.arange(xs[0].shape[1], device=xs[0].device)
        if spec.mode == "forward":
            mask = rest.pop(0) if spec.masked else None
            types = rest.pop(0) if spec.token_types else None
            return _outputs(self.m(*xs, ctx=Context(positions, mask, types)))
        y, new = self.m.step(*xs, state=tuple(rest), ctx=Context(positions, decoding=True))
        return (*_outputs(y), *new)


def _outputs(y: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """A module's value as the unit's leading outputs (a node with several gives a tuple)."""
    return y if isinstance(y, tuple) else (y,)


def _example(t: TensorType, sizes: dict[str, int], dims: dict[str, Dim | None]) -> tuple[Tensor, dict[int, Dim]]:
    """A tensor of type `t` at the example sizes, and its dynamic dimensions (symbols map to one
    `Dim` each: the main sequence axis, an encoder's length, the batch)."""
    shape, dyn = [], {}
    for i, d in enumerate(t.shape):
        if isinstance(d, int):
            shape.append(d)
            continue
        sym = "batch" if i == 0 else str(d)
        if sym not in dims:
            dims[sym] = Dim(sym.replace("*", "_"), min=2, max=MAX_DIM)
            sizes[sym] = EXAMPLE_SEQ + 3
        shape.append(sizes[sym])
        if dims[sym] is not None:
            dyn[i] = dims[sym]
    if t.dtype == "int":
        return torch.zeros(shape, dtype=torch.long), dyn
    return torch.randn(shape), dyn


def unit_inputs(mod: OpModule, spec: UnitSpec, seq_symbol: str) -> tuple[list[Tensor], list[dict[int, Dim] | None],
                                                                       list[str]]:
    """Example arguments, their dynamic shapes and their names, in the unit's argument order.
    `seq_symbol` is the model's main time axis (static 1 in a decode unit)."""
    seq = 1 if spec.mode == "decode" else EXAMPLE_SEQ
    # a stateful node's prefill unit is its chunked form, from two tokens on (one token is the
    # decode unit); everything else serves any length
    shortest = 2 if spec.mode == "prefill" and spec.state_shapes else 1
    seq_dim = None if spec.mode == "decode" else Dim("seq", min=shortest, max=MAX_DIM)
    batch = Dim("batch", min=1, max=MAX_DIM)
    dims: dict[str, Dim | None] = {"batch": batch, seq_symbol: seq_dim}
    sizes = {"batch": EXAMPLE_BATCH, seq_symbol: seq}
    args: list[Tensor] = []
    dyn: list[dict[int, Dim] | None] = []
    names: list[str] = []
    if spec.main_axis:
        args.append(torch.arange(seq) + 3)
        dyn.append({0: seq_dim} if seq_dim is not None else None)
        names.append("positions")
    for i, t in enumerate(spec.in_types):
        x, d = _example(t, sizes, dims)
        args.append(x)
        dyn.append(d or None)
        names.append(f"in_{i}")
    if spec.mode == "forward":
        for flag, name, dtype in ((spec.masked, "attention_mask", torch.bool), (spec.token_types, "token_type_ids", torch.long)):
            if flag:
                args.append(torch.ones(EXAMPLE_BATCH, seq, dtype=dtype))
                dyn.append({0: batch, 1: seq_dim})
                names.append(name)
        return args, dyn, names
    # a cache capped below the context (a sliding window's ring buffer) has its cap as a fixed
    # size: the examples are at least that long, so only the uncapped axes differ between them
    length = max([EXAMPLE_CACHE, *(s.cap for s in mod.declared_state if s.cap)])
    small = mod.init_state(EXAMPLE_BATCH, length, torch.device("cpu"), torch.float32)
    large = mod.init_state(EXAMPLE_BATCH, length + 32, torch.device("cpu"), torch.float32)
    cache = Dim("cache", min=2, max=MAX_DIM)
    for i, (s, s2) in enumerate(zip(small, large, strict=True)):
        args.append(s)
        dyn.append({0: batch, **{k: cache for k in range(1, s.dim()) if s.shape[k] != s2.shape[k]}})
        names.append(f"state_{i}")
    return args, dyn, names


def export_unit(mod: OpModule, spec: UnitSpec, seq_symbol: str, opset: int,
                owners: list[nn.Module]) -> onnx.ModelProto:
    """The unit's ONNX graph: `torch.onnx.export(dynamo=True)` of the module, unoptimized (the
    optimizer would fold transposes into copies of the weights under new names; the assembled
    model is optimized once with the weights kept as they are). Subgraph functions (the bodies of
    `while_loop` and `cond`) are inlined by torch.onnx's opset conversion, which fails on a `cond`
    nested in a `while_loop` (RMT's prefill) unless `_consistent_subgraph_domain` is in place."""
    args, dyn, names = unit_inputs(mod, spec, seq_symbol)
    n_state = 0 if spec.mode == "forward" else len(mod.state_names)
    outs = ["out"] if spec.outputs == 1 else [f"out_{i}" for i in range(spec.outputs)]
    outputs = [*outs, *(f"new_{i}" for i in range(n_state))]
    with warnings.catch_warnings(), torch.no_grad(), _consistent_subgraph_domain(), _quiet_exporter_logs():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(_Unit(mod, spec, owners).eval(), tuple(args), dynamic_shapes=(tuple(dyn),), dynamo=True,
                                 opset_version=opset, optimize=False, input_names=names, output_names=outputs,
                                 verbose=False, report=False)
    proto = prog.model_proto
    _drop_stack_traces(proto.graph)
    return proto


#: Node metadata torch.onnx writes that a shipped model should not carry: the Python stack of
#: every op (~11 KB a node, two thirds of rmt-tiny's file, with this machine's source paths).
DROPPED_METADATA = ("pkg.torch.onnx.stack_trace",)


def _drop_stack_traces(graph: onnx.GraphProto) -> None:
    for node in graph.node:
        kept = [p for p in node.metadata_props if p.key not in DROPPED_METADATA]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
        for a in node.attribute:
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                _drop_stack_traces(sub)


@contextlib.contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    """Warnings the user can do nothing about, kept off the terminal (errors still show):
    torch.onnx's four `torchvision is not installed` per export (24 lines in one `archc export`
    of llama-tiny), and onnx_ir's note that an empty attribute list (a `Scan` without scan
    outputs: a fold) defaults to INTS, which is what it is."""
    logs = [logging.getLogger(n) for n in ("torch.onnx._internal.exporter._registration", "onnx_ir._convenience")]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(logs, levels, strict=True):
            log.setLevel(level)


@contextlib.contextmanager
def _consistent_subgraph_domain() -> Iterator[None]:
    """Work around a torch.onnx 2.13 bug: the model imports its local-function domain
    (`pkg.torch.__subgraph__`, the bodies of `while_loop`/`cond`) at the opset's version, but a
    function that calls another (a `cond` inside a `while_loop`) imports it at version 1, and the
    inliner of the opset conversion refuses the mismatch. After torch.onnx collects the opset
    imports, the functions are given the model's version of every domain both import."""
    from torch.onnx._internal.exporter import _ir_passes

    original = _ir_passes.add_opset_imports

    def add_opset_imports(model: ir.Model) -> None:
        original(model)
        for fn in model.functions.values():
            for domain in fn.opset_imports:
                if domain in model.opset_imports:
                    fn.opset_imports[domain] = model.opset_imports[domain]

    _ir_passes.add_opset_imports = add_opset_imports
    try:
        yield
    finally:
        _ir_passes.add_opset_imports = original
