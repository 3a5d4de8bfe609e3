"""The model's ONNX graph, laid out from the IR: one inlined copy of a unit graph per node.

The IR says which node feeds which, which state each node holds and what its weights are called;
`units.py` gives each distinct node's computation as an ONNX graph. The assembler walks the IR in
order, places a copy of each node's unit graph (every value renamed under the node's id, the
unit's inputs bound to the values of the node's inputs and state, its `m.*` initializers to the
model's weights under their state_dict keys), and adds `Add`/`Mul` for the IR's arithmetic.

A decoder is one graph: `If(seq > 1)` takes the prefill branch (each stateful node's chunked form)
or the decode branch (its one-token recurrent form); both read the same weights, stored once.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from archc.backends.lowering import lowering
from archc.backends.onnx import ExportError
from archc.backends.onnx.lower import LowerCtx, Lowering
from archc.backends.onnx.names import StateName, state_names
from archc.backends.onnx.optimize import simplify_unit
from archc.backends.onnx.units import Mode, UnitSpec, export_unit
from archc.backends.torch.model import ArchModel
from archc.backends.torch.module import OpModule
from archc.ir.cost import MAX_LEN
from archc.ir.graph import Node
from archc.ir.types import TupleType
from archc.ops.registry import REGISTRY
from archc.passes.facts import node_state


@dataclass
class Port:
    """A graph input or output as `archc_export.json` lists it."""

    name: str
    dtype: str
    shape: list[int | str]


@dataclass
class Exported:
    model: onnx.ModelProto
    inputs: list[Port]
    outputs: list[Port]
    states: list[tuple[StateName, Port]]
    units: int  # distinct unit graphs exported
    unit_seconds: float
    kind: str  # "decoder" | "forward"
    #: the nodes lowered directly to onnxruntime's fused operators, and those that were not (why)
    lowered: dict[str, str] = field(default_factory=dict)
    not_lowered: dict[str, str] = field(default_factory=dict)
    #: state input -> the order its declared axes (after batch) are kept in, where a lowering
    #: keeps them otherwise (`Lowering.layout`)
    state_axes: dict[str, list[int]] = field(default_factory=dict)


#: Operators a direct lowering makes around its fused one (weight layout, bias, projections):
#: left out of the report of what each node became.
_PLUMBING = {"Transpose", "MatMul", "Add", "Reshape", "Split", "Concat", "Cast", "Mul", "Sub", "Div", "Neg",
             "Exp", "Sigmoid", "Softplus", "Slice", "Unsqueeze", "Squeeze", "Expand", "Tile", "Shape",
             "Gather", "ReduceSum"}


@dataclass
class _Scope:
    """The nodes and the value names of one graph being filled (the model's, or a branch's)."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    count: int = 0
    value_info: list[onnx.ValueInfoProto] = field(default_factory=list)

    def add(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.count += 1
        out = f"{name}/{op}_{self.count}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


#: What a decoder's `logits` output holds: every position of the step's tokens, or the last only.
LOGITS = ("all", "last")


class Assembler:
    def __init__(self, model: ArchModel, opset: int, target: str = "ort", logits: str = "all") -> None:
        self.model, self.graph, self.opset, self.target = model, model.graph, opset, target
        #: `last`: a decoder's head runs on the last position only (onnxruntime-genai's
        #: `prune_lm_head`, transformers' `logits_to_keep=1`): generation reads nothing else, and
        #: the head is a quarter of a small model's prefill
        self.logits = logits
        #: node id -> the operators its direct lowering made / why the target's lowering refused it
        self.lowered: dict[str, str] = {}
        self.not_lowered: dict[str, str] = {}
        self._top: _Scope | None = None  # the model's top scope (values every branch may read)
        #: whether the graph being laid out is a decoder's `If` between a prefill and a decode form
        self.branched = False
        self._mask_lengths: tuple[str, str] | None = None
        self._per_token: dict[str, str] = {}
        #: node id -> the forms (prefill, decode, forward) in which its module was traced
        self._traced: dict[str, set[str]] = {}
        self.units: dict[str, onnx.ModelProto] = {}
        self.unit_seconds = 0.0
        self.initializers: dict[str, TensorProto] = {}
        self.functions: dict[tuple[str, str], onnx.FunctionProto] = {}
        self.opsets: dict[str, int] = {"": opset}
        #: id(tensor) -> the first state_dict key naming it (tied weights are stored once)
        self.canonical: dict[int, str] = {}
        for key, t in list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False)):
            self.canonical.setdefault(id(t), key)
        self.seq_symbol = str(self.graph.nodes[self.graph.inputs[0]].type.shape[1])

    # -- units ------------------------------------------------------------------------------

    def _module(self, node: Node) -> OpModule:
        return self.model.get_submodule(node.id)

    def _owners(self, node: Node) -> list:
        """The modules whose weights the node's ties read, in a fixed order."""
        return [self.model.get_submodule(target.rsplit(".", 1)[0]) for _, target in sorted(node.ties.items())]

    def unit_spec(self, node: Node, mode: Mode, masked: bool = False, token_types: bool = False) -> UnitSpec:
        mod = self._module(node)
        in_types = tuple(self.graph.input_types(node))
        first = in_types[0] if in_types else None
        main = first is not None and len(first.shape) > 1 and str(first.shape[1]) == self.seq_symbol
        state = () if mode == "forward" else tuple(tuple(s.shape) for s in mod.init_state(1, 64, *_cpu32()))
        # what the traced graph is a function of, besides the weights it binds per node: the
        # node's parameters, ties and body (a higher-order op's block), and what the module
        # declares it bakes in beyond them (`OpModule.export_identity`)
        body = node.body.to_text() if node.body is not None else None
        params = json.dumps([node.params, sorted(node.ties.items()), body, mod.export_identity()], sort_keys=True,
                            default=str)
        outputs = len(node.type.items) if isinstance(node.type, TupleType) else 1
        return UnitSpec(node.op, params, in_types, state, mode, main, masked and main, token_types and main, outputs)

    def unit(self, node: Node, spec: UnitSpec) -> onnx.ModelProto:
        if spec.key not in self.units:
            t0 = time.perf_counter()
            try:
                proto = simplify_unit(export_unit(self._module(node), spec, self.seq_symbol, self.opset,
                                                  self._owners(node)))
            except Exception as e:  # torch.export or torch.onnx could not take this op's module
                first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
                raise ExportError(f"`{node.op}` could not be exported to ONNX ({spec.mode} form): "
                                  f"{type(e).__name__}: {first[:200]}",
                                  "run this spec with `archc generate`; docs/onnx.md lists what exports",
                                  node) from e
            self.unit_seconds += time.perf_counter() - t0
            for f in proto.functions:
                self.functions.setdefault((f.domain, f.name), f)
            for o in proto.opset_import:
                self.opsets.setdefault(o.domain, o.version)
            self.units[spec.key] = proto
        return self.units[spec.key]

    # -- weights ----------------------------------------------------------------------------

    def _store(self, node: Node, t, attr: str) -> str:
        """The model-level initializer of tensor `t` (module attribute `attr` of `node`), stored
        once under its first state_dict key."""
        key = self.canonical.get(id(t), f"{node.id}.{attr}")
        if key not in self.initializers:
            self.initializers[key] = numpy_helper.from_array(t.detach().cpu().contiguous().numpy(), key)
        return key

    def weight_key(self, node: Node, attr: str) -> str:
        """The initializer of `node`'s module tensor `attr` (a direct lowering's weights)."""
        t = _tensor(self._module(node), attr)
        if t is None:
            raise ExportError(f"`{node.op}` has no weight `{attr}`", None, node)
        return self._store(node, t, attr)

    def holds(self, node: Node, attr: str) -> bool:
        return _tensor(self._module(node), attr) is not None

    def constant(self, key: str, value: np.ndarray) -> str:
        if key not in self.initializers:
            self.initializers[key] = numpy_helper.from_array(value, key)
        return key

    def emit(self, ctx: LowerCtx, op: str, inputs: list[str], outputs: int | list[str], domain: str,
             widths: list[int | None] | None = None, **attrs) -> list[str]:
        """One ONNX node of a direct lowering, into the scope being filled. `widths` types its
        outputs as float [batch, seq, width] (a contrib operator's outputs have no type for ONNX's
        shape inference, which onnxruntime's quantizers need)."""
        scope = ctx.scope
        if isinstance(outputs, int):
            names = []
            for _ in range(outputs):
                scope.count += 1
                names.append(f"{ctx.out}/{op}_{scope.count}")
        else:
            names = list(outputs)
        scope.count += 1
        scope.nodes.append(helper.make_node(op, inputs, names, name=f"{ctx.out}/{op}_{scope.count}",
                                            domain=domain or None, **attrs))
        if domain:
            self.opsets.setdefault(domain, 1)
        if scope is self._top:  # (see `emit`'s docstring; inside If branches the types are left
            # out: onnxruntime's QDQ-to-MatMulNBits rewrite cannot find weights in the outer scope)
            for name, width in zip(names, widths or [], strict=False):
                if name and width is not None and name not in ctx.present:
                    scope.value_info.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                                          ["batch", "seq", width]))
        ctx.made.append(op)
        return names

    def per_token(self, key: str, value: np.ndarray) -> str:
        if key not in self._per_token:
            top = self._top
            assert top is not None, "per-token constants are a decoder's"
            tail = self.constant(f"{key}.shape", np.array(value.shape, dtype=np.int64))
            shape = top.add("Concat", [top.add("Shape", ["input_ids"], f"top/{key}"), tail], f"top/{key}", axis=0)
            self._per_token[key] = top.add("Expand", [self.constant(key, value), shape], f"top/{key}")
        return self._per_token[key]

    def mask_lengths(self) -> tuple[str, str]:
        if self._mask_lengths is None:
            top = self._top
            assert top is not None, "mask lengths are a decoder's"
            for name, v in (("const.one_1d", [1]),):
                self.initializers[name] = numpy_helper.from_array(np.array(v, dtype=np.int64), name)
            total = top.add("ReduceSum", ["attention_mask", "const.one_1d"], "top/gqa", keepdims=0)
            seqlens = top.add("Cast", [top.add("Sub", [total, "const.one"], "top/gqa")], "top/gqa",
                              to=TensorProto.INT32)
            width = top.add("Gather", [top.add("Shape", ["attention_mask"], "top/gqa"), "const.one_index"], "top/gqa",
                            axis=0)
            self._mask_lengths = (seqlens, top.add("Cast", [width], "top/gqa", to=TensorProto.INT32))
        return self._mask_lengths

    def _weight(self, node: Node, name: str, init: TensorProto) -> str:
        """The model-level initializer for a unit initializer `name` placed at `node`."""
        t = None
        if name.startswith("m."):
            t = _tensor(self._module(node), name[2:])
        elif name.startswith("tied."):
            i, attr = name[len("tied."):].split(".", 1)
            t = _tensor(self._owners(node)[int(i)], attr)
        if t is not None:
            return self._store(node, t, name.split(".", 1)[1])
        # a constant of the traced code: the same in every copy, stored once by content
        digest = hashlib.sha256(init.SerializeToString()).hexdigest()[:16]
        key = f"const.{digest}"
        if key not in self.initializers:
            c = TensorProto()
            c.CopyFrom(init)
            c.name = key
            self.initializers[key] = c
        return key

    # -- inlining ---------------------------------------------------------------------------

    def inline(self, scope: _Scope, node: Node, spec: UnitSpec, prefix: str, inputs: list[str],
               outputs: list[str]) -> None:
        """A copy of the unit graph of `node`: its inputs bound to `inputs`, its outputs named `outputs`."""
        g = self.unit(node, spec).graph
        bind = dict(zip((i.name for i in g.input), inputs, strict=True))
        for init in g.initializer:
            bind[init.name] = self._weight(node, init.name, init)
        passthrough = []  # unit outputs that are an input or a weight (an op returning x unchanged)
        for o, target in zip(g.output, outputs, strict=True):
            if o.name in bind:
                passthrough.append((bind[o.name], target))
            else:
                bind[o.name] = target

        def rename(n: str) -> str:
            return "" if not n else bind.get(n, f"{prefix}/{n}")

        for n in g.node:
            scope.nodes.append(_renamed(n, rename, prefix))
        for src, target in passthrough:
            scope.nodes.append(helper.make_node("Identity", [src], [target], name=f"{target}/passthrough"))

    # -- graphs -----------------------------------------------------------------------------

    def _direct(self, node: Node, ctx: LowerCtx) -> Lowering | None:
        """The node's direct lowering for this target (onnxruntime's operators first for `ort`,
        then standard ONNX), or None: trace its module. A refusal is recorded with its reason."""
        for backend in (("ort", "onnx") if self.target == "ort" else ("onnx",)):
            entry = lowering(node.op, backend)
            if entry is None:
                continue
            why = entry.refuse(ctx)
            if why is None:
                return entry
            self.not_lowered[node.id] = why
        return None

    def _one_form(self, by_node: dict[str, list[StateName]], raw_past: dict[str, list[str]]) -> bool:
        """Whether every stateful node has a direct lowering for both the prefill and the decode
        form (so the decoder needs no `If`); a refusal is left for `emit_nodes` to record."""
        for nid in by_node:
            node = self.graph.nodes[nid]
            for mode in ("prefill", "decode"):
                ctx = LowerCtx(node, [], "", mode, raw_past[nid], [], self)
                known = dict(self.not_lowered)
                if self._direct(node, ctx) is None:
                    self.not_lowered = known
                    return False
        return True

    def _state_axes(self, by_node: dict[str, list[StateName]], raw_past: dict[str, list[str]]
                    ) -> tuple[dict[str, list[int]], set[str]]:
        """How the lowerings of a one-form decoder keep their state, where not as declared: the
        layouts (`Lowering.layout`) by state input, and the state inputs of ring buffers the
        operator keeps as a growing cache (`Lowering.full_cache`)."""
        axes: dict[str, list[int]] = {}
        full: set[str] = set()
        for nid, sns in by_node.items():
            ctx = LowerCtx(self.graph.nodes[nid], [], "", "prefill", raw_past[nid], [], self)
            entry = self._direct(self.graph.nodes[nid], ctx)
            if entry is None:
                continue
            if entry.full_cache is not None and entry.full_cache(ctx):
                full.update(sn.past for sn in sns)
            for sn, perm in zip(sns, entry.layout(ctx) if entry.layout else (None,) * len(sns), strict=True):
                if perm is not None and list(perm) != sorted(perm):
                    axes[sn.past] = list(perm)
        return axes, full

    def emit_nodes(self, scope: _Scope, mode: Mode, positions: str, feeds: dict[str, str],
                   past: dict[str, list[str]], present: dict[str, list[str]], mask: str | None = None,
                   token_types: str | None = None, raw_past: dict[str, list[str]] | None = None) -> str:
        """Every IR node of the model into `scope`; returns the value of the graph's output.
        `feeds` maps the IR's input nodes to values; `past`/`present` the state of each node
        (`past` padded for the traced units' in-place writes, `raw_past` as it comes in)."""
        values = dict(feeds)
        prefix_mode = f"{mode}/"
        for node in self.graph.nodes.values():
            kind = REGISTRY[node.op].kind
            if kind == "input":
                continue
            ins = [values[i] for i in node.inputs]
            if self.logits == "last" and mode != "forward" and node.id == self.graph.outputs[0]:
                ins[0] = self._last_position(scope, ins[0], f"{prefix_mode}{node.id}")
            ctx = LowerCtx(node, ins, f"{prefix_mode}{node.id}", mode, (raw_past or past).get(node.id, []),
                           present.get(node.id, []), self, scope, positions=positions)
            direct = self._direct(node, ctx)
            if direct is not None:  # an entry of the lowering table (archc/backends/onnx/ops/, ort/)
                values[node.id] = direct.emit(ctx)
                if ctx.made and kind != "arith":
                    label = ("+".join(dict.fromkeys(op for op in ctx.made if op not in _PLUMBING))
                             or f"{node.op} as standard operators")
                    # lowered in one form of a branched decoder only (Mamba's step): say which
                    self.lowered[node.id] = label + (f" ({mode} only)" if self._traced.get(node.id, set()) - {mode}
                                                     else "")
                continue
            if kind == "arith":
                raise ExportError(f"arithmetic op `{node.op}` has no ONNX lowering", None, node)
            self._traced.setdefault(node.id, set()).add(mode)
            stateful = bool(past.get(node.id))
            node_mode: Mode = mode if (mode == "forward" or stateful) else "prefill"
            if node_mode == "decode" and self.model.get_submodule(node.id).exported_step_loops_over_tokens:
                node_mode = "prefill"  # its multi-token graph loops over tokens: it takes one as well
            spec = self.unit_spec(node, node_mode, mask is not None, token_types is not None)
            unit_ins = ([positions] if spec.main_axis else []) + ins
            unit_ins += ([mask] if spec.masked else []) + ([token_types] if spec.token_types else [])
            if mode != "forward":
                unit_ins += past.get(node.id, [])
            outs = ([f"{prefix_mode}{node.id}"] if spec.outputs == 1 else
                    [f"{prefix_mode}{node.id}#{i}" for i in range(spec.outputs)])
            self.inline(scope, node, spec, f"{prefix_mode}{node.id}", unit_ins, [*outs, *present.get(node.id, [])])
            values[node.id] = outs[0] if spec.outputs == 1 else outs
        return values[self.graph.outputs[0]]

    def _last_position(self, scope: _Scope, x: str, name: str) -> str:
        """`x` [batch, seq, d] → [batch, 1, d], the head's input at the last position (a decode
        step's one token passes through)."""
        for const, v in (("const.last_start", -1), ("const.last_end", 2**62), ("const.seq_axis", 1)):
            self.initializers[const] = numpy_helper.from_array(np.array([v], dtype=np.int64), const)
        return scope.add("Slice", [x, "const.last_start", "const.last_end", "const.seq_axis"], f"{name}/last")

    def decoder(self) -> Exported:
        """The decoder graph. Inputs `input_ids` [batch, seq], `attention_mask` [batch, past + seq]
        (onnxruntime-genai's convention: its length minus seq is the position of the first token)
        and the state; outputs `logits` and the new state. A cache indexed by position (a KV
        cache) comes in holding the `past_seq` tokens so far and goes out holding `past_seq + seq`
        (genai's and transformers' layout): the graph pads it by `seq` and the node writes the new
        positions. Fixed-size state (recurrent states, ring buffers) keeps its shape, but for a
        ring buffer whose operator reads a growing cache (a sliding window as
        `GroupQueryAttention`), which grows."""
        g = self.graph
        declared = [(n.id, node_state(g, n)) for n in g.nodes.values() if REGISTRY[n.op].kind == "layer"]
        names = state_names(declared)
        tensors = [s for _, state in declared for s in state]
        by_node: dict[str, list[StateName]] = {}
        for sn in names:
            by_node.setdefault(sn.node, []).append(sn)
        raw_past = {nid: [sn.past for sn in sns] for nid, sns in by_node.items()}
        one_form = bool(names) and self._one_form(by_node, raw_past)
        state_axes, full_caches = self._state_axes(by_node, raw_past) if one_form else ({}, set())
        ports: list[tuple[StateName, Port]] = []
        growing: dict[str, int] = {}  # past input -> the axis that grows
        dtypes = {(nid, n): _np_name(t.dtype) for nid in by_node
                  for n, t in zip(self.model.get_submodule(nid).state_names,
                                  self.model.get_submodule(nid).init_state(1, 8, *_cpu32()), strict=True)}
        for sn, st in zip(names, tensors, strict=True):
            shape: list[int | str] = ["batch"]
            dims = list(st.shape)
            if sn.past in state_axes:  # the operator's layout (fixed-size state only)
                assert MAX_LEN not in dims and isinstance(st.fill, int | float), \
                    f"{sn.past}: a growing or parameter-initialized state keeps its declared layout"
                dims = [dims[i] for i in state_axes[sn.past]]
            for k, d in enumerate(dims):
                if d == MAX_LEN and (st.cap is None or sn.past in full_caches):
                    growing[sn.past] = k + 1
                    shape.append("past_seq")
                else:
                    shape.append(st.cap if d == MAX_LEN else int(d))
            ports.append((sn, Port(sn.past, dtypes[(sn.node, sn.state)], shape)))
        vocab = self.model.out_type_vocab()
        top = self._top = _Scope()
        for name, v in (("const.one", 1), ("const.one_index", 1)):
            self.initializers[name] = numpy_helper.from_array(np.array(v, dtype=np.int64), name)
        seq = top.add("Gather", [top.add("Shape", ["input_ids"], "top"), "const.one_index"], "top", axis=0)
        total = top.add("Gather", [top.add("Shape", ["attention_mask"], "top"), "const.one_index"], "top", axis=0)
        position = top.add("Sub", [total, seq], "top")
        positions = top.add("Range", [position, total, "const.one"], "top")
        padded: dict[str, str] = {}
        for sn, p in ports:
            if sn.past in growing:
                rank, axis = len(p.shape), growing[sn.past]
                onehot = f"const.pad_end_{rank}_{axis}"
                self.initializers[onehot] = numpy_helper.from_array(
                    np.eye(2 * rank, dtype=np.int64)[rank + axis], onehot)
                pads = top.add("Mul", [onehot, seq], f"top/{sn.past}")
                padded[sn.past] = top.add("Pad", [sn.past, pads], f"top/{sn.past}")
        feeds = {g.inputs[0]: "input_ids"}
        past = {nid: [padded.get(sn.past, sn.past) for sn in sns] for nid, sns in by_node.items()}
        outs = ["logits", *(sn.present for sn in names)]
        out_ports = [Port("logits", "float32", ["batch", 1 if self.logits == "last" else "seq", vocab]),
                     *(Port(sn.present, p.dtype, ["total_seq" if d == "past_seq" else d for d in p.shape])
                       for sn, p in ports)]
        if one_form:
            # every stateful node lowers to one operator that takes any number of new tokens
            # (GroupQueryAttention): one graph, no `If` between a prefill and a decode form
            present = {nid: [sn.present for sn in sns] for nid, sns in by_node.items()}
            logits = self.emit_nodes(top, "prefill", positions, feeds, past, present, raw_past=raw_past)
            top.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="logits"))
        elif names:
            self.branched = True
            branches = {}
            for mode in ("prefill", "decode"):
                scope = _Scope()
                present = {nid: [f"{mode}/{sn.present}" for sn in sns] for nid, sns in by_node.items()}
                logits = self.emit_nodes(scope, mode, positions, feeds, past, present, raw_past=raw_past)
                branch_outs = [logits, *(f"{mode}/{sn.present}" for sn in names)]
                branches[mode] = helper.make_graph(scope.nodes, f"{mode}", [],
                                                   [_value_info(n, p) for n, p in zip(branch_outs, out_ports, strict=True)],
                                                   value_info=scope.value_info)
            more = top.add("Greater", [seq, "const.one"], "top")
            top.nodes.append(helper.make_node("If", [more], outs, name="prefill_or_decode",
                                              then_branch=branches["prefill"], else_branch=branches["decode"]))
        else:
            logits = self.emit_nodes(top, "prefill", positions, feeds, {}, {})
            top.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="logits"))
        in_ports = [Port("input_ids", "int64", ["batch", "seq"]), Port("attention_mask", "int64", ["batch", "total_seq"]),
                    *(p for _, p in ports)]
        model = self._model(top, in_ports, out_ports)
        return Exported(model, in_ports, out_ports, ports, len(self.units), self.unit_seconds, "decoder",
                        self.lowered, self.not_lowered, state_axes)

    def forward_graph(self) -> Exported:
        g = self.graph
        single = len(g.inputs) == 1
        in_names = ["input_ids"] if single else list(g.inputs)
        token_types = any(n.op == "embed" and n.params.get("token_types") for n in g.nodes.values())
        top = self._top = _Scope()
        first = in_names[0]
        seq = top.add("Gather", [top.add("Shape", [first], "top"), "const.one_index"], "top", axis=0)
        positions = top.add("Range", ["const.zero", seq, "const.one"], "top")
        for name, v in (("const.one", 1), ("const.one_index", 1), ("const.zero", 0)):
            self.initializers[name] = numpy_helper.from_array(np.array(v, dtype=np.int64), name)
        mask = top.add("Cast", ["attention_mask"], "top", to=TensorProto.BOOL)
        feeds = dict(zip(g.inputs, in_names, strict=True))
        out = self.emit_nodes(top, "forward", positions, feeds, {}, {}, mask, "token_type_ids" if token_types else None)
        top.nodes.append(helper.make_node("Identity", [out], ["logits"], name="logits"))
        in_ports = [Port(n, "int64", ["batch", "seq" if i == 0 else f"seq_{n}"]) for i, n in enumerate(in_names)]
        in_ports.append(Port("attention_mask", "int64", ["batch", "seq"]))
        if token_types:
            in_ports.append(Port("token_type_ids", "int64", ["batch", "seq"]))
        out_t = g.nodes[g.outputs[0]].type
        out_shape: list[int | str] = ["batch", *(d if isinstance(d, int) else "seq" for d in out_t.shape[1:])]
        out_ports = [Port("logits", "float32", out_shape)]
        model = self._model(top, in_ports, out_ports)
        return Exported(model, in_ports, out_ports, [], len(self.units), self.unit_seconds, "forward",
                        self.lowered, self.not_lowered)

    def _model(self, top: _Scope, inputs: list[Port], outputs: list[Port]) -> onnx.ModelProto:
        graph = helper.make_graph(top.nodes, self.graph.name, [_value_info(p.name, p) for p in inputs],
                                  [_value_info(p.name, p) for p in outputs],
                                  initializer=[self.initializers[k] for k in sorted(self.initializers)],
                                  value_info=top.value_info)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(self.opsets.items())],
                                  functions=list(self.functions.values()), producer_name="archc")
        model.ir_version = max(u.ir_version for u in self.units.values()) if self.units else 10
        return model


def _tensor(mod: OpModule, attr: str):
    """The module's parameter or buffer `attr`, or None (a constant the trace lifted)."""
    for get in (mod.get_parameter, mod.get_buffer):
        try:
            return get(attr)
        except AttributeError:
            pass
    return None


def _cpu32():
    import torch

    return torch.device("cpu"), torch.float32


_NP = {"torch.float32": "float32", "torch.bool": "bool", "torch.int64": "int64", "torch.float64": "float64"}
_ONNX = {"float32": TensorProto.FLOAT, "bool": TensorProto.BOOL, "int64": TensorProto.INT64,
         "float64": TensorProto.DOUBLE}


def _np_name(dtype) -> str:
    return _NP[str(dtype)]


def _value_info(name: str, p: Port) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, _ONNX[p.dtype], p.shape)


def _renamed(n: onnx.NodeProto, rename, prefix: str) -> onnx.NodeProto:
    """A copy of node `n` with every value name mapped, subgraphs (If/Loop/Scan bodies) included."""
    out = onnx.NodeProto()
    out.CopyFrom(n)
    out.name = f"{prefix}/{n.name}" if n.name else ""
    out.input[:] = [rename(i) for i in n.input]
    out.output[:] = [rename(o) for o in n.output]
    for a in out.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            _rename_graph(a.g, rename, prefix)
        elif a.type == onnx.AttributeProto.GRAPHS:
            for sub in a.graphs:
                _rename_graph(sub, rename, prefix)
    return out


def _rename_graph(g: onnx.GraphProto, rename, prefix: str) -> None:
    for v in list(g.input) + list(g.output) + list(g.value_info):
        v.name = rename(v.name)
    for init in g.initializer:
        init.name = rename(init.name)
    nodes = [_renamed(n, rename, prefix) for n in g.node]
    del g.node[:]
    g.node.extend(nodes)


__all__ = ["Assembler", "Exported", "Port"]
