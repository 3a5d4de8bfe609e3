"""`--quantize-state int8`: the decoder's KV caches stored in int8, one fp32 scale per row.

The weight quantizers (`quantize.py`) change what the graph computes with; this changes what it
carries between steps, which no onnxruntime tool does for a custom decoder. For each state the
manifest marks `kv` (attention keys and values, one row of `head_dim` values per token or ring
slot, declared so by the op record's `StateTensor.kv`) the graph takes the cache as int8 plus a
scale input [batch, heads, slots, 1], dequantizes it on entry (`DequantizeLinear`, blocked along
the head axis) and quantizes the rows it adds (`QuantizeLinear` with the scale max|row| / 127:
symmetric, per token and head); a growing cache returns the int8 rows it came in with unchanged,
followed by the new ones (`Concat`), and a ring buffer is requantized whole — the scale of a row
is a function of the row alone, so a requantized row keeps its scale and int8 values exactly
(tested). Either way the error is made once, when a token enters the cache, and does not
compound. Attention itself still runs in fp32 on the dequantized cache; what shrinks (4×) is the
state a deployment keeps in memory and moves across the step boundary. Recurrent states, convolution windows and memories are
never touched: a recurrence carries its error to every later token (KEPT_BECAUSE["recurrent"]).

Blocked `QuantizeLinear`/`DequantizeLinear` are opset 21 operators: an export at an older opset
is refused with a diagnostic.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from archc.backends.onnx.manifest import Manifest, PortInfo, StateInfo
from archc.backends.onnx.precision import QuantizeError, walk
from archc.ir.graph import Graph
from archc.ops.registry import REGISTRY
from archc.passes.facts import is_causal, node_state

#: the opset that has blocked (per-row) QuantizeLinear / DequantizeLinear
MIN_STATE_OPSET = 21
#: the smallest scale: a row of zeros (a fresh ring buffer) quantizes to zeros, not NaN
_TINY = 1e-30


def kv_states(manifest: Manifest) -> list[StateInfo]:
    return [s for s in manifest.state if s.kv]


def check_kv_state(manifest: Manifest) -> list[StateInfo]:
    """The KV caches of an exported folder `--quantize-state int8` will quantize; ARC1109 when there
    are none (a forward graph, a recurrent-only decoder) or the opset lacks blocked quantization."""
    kv = kv_states(manifest)
    _refuse(manifest.spec, manifest.kind == "decoder", bool(kv), sorted({s.state for s in manifest.state}),
            manifest.opset)
    return kv


def refuse_state_request(graph: Graph, opset: int, step: bool, spec: str) -> None:
    """The same check from the IR, before an export writes anything: the op records' declared
    state (`StateTensor.kv`) of the layers a decoder would carry."""
    declared = [s for n in graph.nodes.values() if REGISTRY[n.op].kind == "layer" for s in node_state(graph, n)]
    decoder = step and is_causal(graph) and len(graph.inputs) == 1
    _refuse(spec, decoder, any(s.kv for s in declared), sorted({s.name for s in declared}), opset)


def _refuse(spec: str, decoder: bool, has_kv: bool, states: list[str], opset: int) -> None:
    if not decoder or not has_kv:
        what = "is exported as a forward graph (no state)" if not decoder else (
            "has no KV cache: its state is " + ", ".join(states) +
            ", recurrent state that stays fp32 (an error in it reaches every later token)")
        raise QuantizeError(f"--quantize-state int8 quantizes KV caches, and {spec} {what}",
                            "drop --quantize-state; --quantize int8 / int4 quantize the weights", code="ARC1109")
    if opset < MIN_STATE_OPSET:
        raise QuantizeError(f"--quantize-state int8 needs opset {MIN_STATE_OPSET} or later (blocked "
                            f"QuantizeLinear / DequantizeLinear); this export is opset {opset}",
                            f"export with --opset {MIN_STATE_OPSET} or later (the default is 23)", code="ARC1109")


def quantize_kv_state(proto: onnx.ModelProto, manifest: Manifest) -> tuple[onnx.ModelProto, Manifest]:
    """The decoder with each KV cache carried in int8 (see the module docstring), and its manifest
    (the cache ports int8, a `<name>_scale` state beside each). Both are new objects."""
    kv = check_kv_state(manifest)
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    g = model.graph
    g.initializer.extend([numpy_helper.from_array(np.array([-1], np.int64), "const.state_last_axis"),
                          numpy_helper.from_array(np.array(127.0, np.float32), "const.state_int8_max"),
                          numpy_helper.from_array(np.array(_TINY, np.float32), "const.state_tiny"),
                          numpy_helper.from_array(np.array([2 ** 62], np.int64), "const.state_int64_max")])
    inputs = {i.name: i for i in g.input}
    outputs = {o.name: o for o in g.output}
    entry: list[onnx.NodeProto] = []
    renamed: dict[str, str] = {}
    for s in kv:
        rows = _row_axis(s)
        width = s.shape[-1]
        fp = f"{s.input}/dequantized"
        renamed[s.input] = fp
        inputs[s.input].type.tensor_type.elem_type = TensorProto.INT8
        g.input.insert(list(g.input).index(inputs[s.input]) + 1,
                       helper.make_tensor_value_info(_scale(s.input), TensorProto.FLOAT, _scale_shape(s.shape)))
        entry.append(helper.make_node("DequantizeLinear", [s.input, _scale(s.input)], [fp], f"{s.input}/dequantize",
                                      axis=rows, block_size=int(width)))
    for n in walk(g):
        for i, name in enumerate(n.input):
            if name in renamed:
                n.input[i] = renamed[name]
    exit_nodes: list[onnx.NodeProto] = []
    for s in kv:
        fp = f"{s.output}/fp32"
        for n in g.node:  # the top graph's node (the If) returns it
            for i, name in enumerate(n.output):
                if name == s.output:
                    n.output[i] = fp
            for i, name in enumerate(n.input):
                if name == s.output:
                    n.input[i] = fp
        p = f"{s.output}/quantize"
        growing = "past_seq" in s.shape
        rows = fp
        if growing:  # the old rows are the past as it came in: only the new ones are quantized
            axis = s.shape.index("past_seq")
            rows = f"{p}/new_rows"
            exit_nodes += [
                helper.make_node("Shape", [s.input], [f"{p}/past_len"], f"{p}/past_len", start=axis, end=axis + 1),
                helper.make_node("Slice", [fp, f"{p}/past_len", "const.state_int64_max", f"{p}/axis"], [rows],
                                 f"{p}/slice"),
            ]
            g.initializer.append(numpy_helper.from_array(np.array([axis], np.int64), f"{p}/axis"))
        q_rows, s_rows = (f"{p}/q_new", f"{p}/scale_new") if growing else (s.output, _scale(s.output))
        exit_nodes += [
            helper.make_node("Abs", [rows], [f"{p}/abs"], f"{p}/abs"),
            helper.make_node("ReduceMax", [f"{p}/abs", "const.state_last_axis"], [f"{p}/absmax"], f"{p}/absmax",
                             keepdims=1),
            helper.make_node("Div", [f"{p}/absmax", "const.state_int8_max"], [f"{p}/scale_raw"], f"{p}/div"),
            helper.make_node("Max", [f"{p}/scale_raw", "const.state_tiny"], [s_rows], f"{p}/scale"),
            helper.make_node("QuantizeLinear", [rows, s_rows], [q_rows], p, axis=_row_axis(s),
                             block_size=int(s.shape[-1]), output_dtype=TensorProto.INT8),
        ]
        if growing:
            exit_nodes += [
                helper.make_node("Concat", [s.input, q_rows], [s.output], f"{p}/concat", axis=axis),
                helper.make_node("Concat", [_scale(s.input), s_rows], [_scale(s.output)], f"{p}/concat_scale",
                                 axis=axis),
            ]
        out = outputs[s.output]
        out.type.tensor_type.elem_type = TensorProto.INT8
        shape = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
        g.output.insert(list(g.output).index(out) + 1,
                        helper.make_tensor_value_info(_scale(s.output), TensorProto.FLOAT, _scale_shape(shape)))
    nodes = entry + list(g.node) + exit_nodes
    del g.node[:]
    g.node.extend(nodes)
    return model, _manifest(manifest, kv)


def cache_bytes_per_token(manifest: Manifest) -> int:
    """Bytes the growing caches (`past_seq` axis) add per token of one sequence, scales included:
    the state memory a long context costs."""
    total = 0
    for s in manifest.state:
        if "past_seq" in s.shape:
            n = 1
            for d in s.shape:
                if isinstance(d, int):
                    n *= d
            total += n * np.dtype(s.dtype).itemsize
    return total


def _row_axis(s: StateInfo) -> int:
    """The head axis (the last): each row along it is one token's keys or values of one head."""
    return len(s.shape) - 1


def _scale(name: str) -> str:
    return f"{name}_scale"


def _scale_shape(shape: list) -> list:
    return [*shape[:-1], 1]


def _manifest(manifest: Manifest, kv: list[StateInfo]) -> Manifest:
    m = manifest.model_copy(deep=True)
    quantized = {s.input for s in kv} | {s.output for s in kv}
    state: list[StateInfo] = []
    for s in m.state:
        state.append(s)
        if s.kv:
            s.dtype = "int8"
            state.append(StateInfo(input=_scale(s.input), output=_scale(s.output), node=s.node,
                                   state=f"{s.state}_scale", dtype="float32", shape=_scale_shape(s.shape), fill=0.0,
                                   scale_of=s.input))
    m.state = state
    for ports in (m.inputs, m.outputs):
        out: list[PortInfo] = []
        for p in ports:
            out.append(p)
            if p.name in quantized:
                p.dtype = "int8"
                out.append(PortInfo(name=_scale(p.name), dtype="float32", shape=_scale_shape(p.shape)))
        ports[:] = out
    m.genai = ("not for onnxruntime-genai: the KV caches are int8 with a scale per row (--quantize-state int8); "
               "genai's decoder feeds fp32 caches")
    return m


__all__ = ["MIN_STATE_OPSET", "cache_bytes_per_token", "check_kv_state", "kv_states", "quantize_kv_state",
           "refuse_state_request"]
