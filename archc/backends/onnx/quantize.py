"""Quantization of an exported folder with onnxruntime's own tools, steered by the ops' precision rules.

The exported fp32 graph is handed to onnxruntime's quantizers — `quantize_dynamic` (int8 weights,
activations quantized at run time), `quantize_static` (int8 QDQ, activations calibrated on token
sequences: `calibrate.py`) and `MatMulNBitsQuantizer` (block-wise weight-only int4) — and archc
decides only *which* nodes they may touch: each weight-consuming node (MatMul, Gemm, Gather, Conv)
reads a weight whose state_dict key names an IR node and a parameter, whose op record's precision
rule gives its class (its declared `Weight.cls`, `archc.passes.facts.graph_weights`); a node whose class is kept goes into
`nodes_to_exclude`. The decision per weight is written to `archc_export.json` and printed by
`archc export --explain`.

Three things the tools do not do are done here, each small:

* **Weights in the layout the quantizers look for.** The export keeps every weight under its
  state_dict key, transposed by a `Transpose` node that onnxruntime folds at load time; the
  quantizers only see a MatMul whose second input *is* an initializer. So each weight that is to
  be quantized is stored transposed once (`<key>.T`), MoE experts' `Gemm(transB)` become MatMul.
* **Tied tables stored once.** A tied lm_head reads the embedding table transposed; quantized,
  the head's int8/int4 copy and the embedding's fp32 table would both be kept (the table is a
  third of a tiny model). The embedding lookup is rewritten to gather rows from the head's
  quantized weight and scale them (`Gather` + `Mul` for int8, `GatherBlockQuantized` for int4 — as
  onnxruntime-genai's model builder shares its embeddings).
* **Static QDQ on a decoder.** onnxruntime's QDQ quantizer and calibrator work on the main graph
  only, and a decoder is an `If` over a prefill and a decode branch: each branch is quantized as
  a model of its own, calibrated on the values it actually sees, and put back (`calibrate.py`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common
from onnx import TensorProto, helper, numpy_helper

from archc.backends.onnx.calibrate import Calibration, quantize_static_int8
from archc.backends.onnx.precision import (
    QuantizeError,
    QuantizeOptions,
    WeightUse,
    plan,
    quiet_quantizer,
    tool_scheme,
    walk,
)
from archc.ir.graph import Graph

# -- weights in the quantizers' layout --------------------------------------------------------


def to_quantizer_layout(proto: onnx.ModelProto, uses: list[WeightUse]) -> onnx.ModelProto:
    """The model with each weight that is to be quantized stored as its quantizers see it: a
    `Transpose` of it folded into `<key>.T` (used by the MatMuls being quantized), a plain `Gemm`
    (MoE experts) replaced by MatMul (+ Add of its bias) on the transposed weight. Scan's empty
    list attributes are dropped (onnxruntime's quantizer cannot copy an empty attribute;
    the defaults are the same)."""
    model = ir.serde.deserialize_model(proto)
    g = model.graph
    chosen = {u.node for u in uses if u.quantize}

    def transposed(src: ir.Value) -> ir.Value:
        name = src.name + ".T"
        if name not in g.initializers:
            arr = src.const_value.numpy()
            g.register_initializer(ir.Value(name=name, const_value=ir.tensor(np.ascontiguousarray(arr.T), name=name)))
        return g.initializers[name]

    for node in list(ir.traversal.RecursiveGraphIterator(g)):
        if node.op_type == "Scan":
            for k in [k for k, a in node.attributes.items() if a.type == ir.AttributeType.INTS and not a.value]:
                del node.attributes[k]
        if node.name not in chosen:
            continue
        if node.op_type == "MatMul":
            src = node.inputs[1].producer()
            if src is not None and src.op_type == "Transpose" and _is_weight(src.inputs[0], g):
                node.replace_input_with(1, transposed(src.inputs[0]))
        elif node.op_type == "Gemm" and _is_weight(node.inputs[1], g):
            a = {k: v.value for k, v in node.attributes.items()}
            w = transposed(node.inputs[1]) if a.get("transB", 0) else node.inputs[1]
            mm = ir.node("MatMul", [node.inputs[0], w], name=node.name)
            out = mm.outputs[0]
            new = [mm]
            if len(node.inputs) > 2 and node.inputs[2] is not None:
                add = ir.node("Add", [out, node.inputs[2]], name=node.name + "/bias")
                new.append(add)
                out = add.outputs[0]
            node.graph.insert_after(node, new)
            node.outputs[0].replace_all_uses_with(out)
            if node.outputs[0].is_graph_output():
                _rename_output(node.graph, node.outputs[0], out)
            node.graph.remove(node, safe=True)
    onnx_ir.passes.common.RemoveUnusedNodesPass()(model)
    return ir.serde.serialize_model(model)


def _is_weight(v: ir.Value | None, g: ir.Graph) -> bool:
    return v is not None and v.name in g.initializers and v.const_value is not None and len(v.shape) == 2


def _rename_output(graph: ir.Graph, old: ir.Value, new: ir.Value) -> None:
    name = old.name
    idx = list(graph.outputs).index(old)
    old.name = name + "/gemm"
    new.name = name
    graph.outputs[idx] = new


# -- the schemes ------------------------------------------------------------------------------


def _tmp_out(fn: Callable[[str], None]) -> onnx.ModelProto:
    """Run an onnxruntime tool that writes its result to a path; return the model it wrote."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "q.onnx")
        fn(out)
        return onnx.load(out)


def quantize_dynamic_int8(proto: onnx.ModelProto, uses: list[WeightUse]) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    include = sorted({u.node for u in uses if u.quantize})
    ops = sorted({u.op_type if u.op_type != "Gemm" else "MatMul" for u in uses if u.quantize})
    if not include:
        return proto
    with quiet_quantizer():
        return _tmp_out(lambda out: quantize_dynamic(
            proto, out, op_types_to_quantize=ops, per_channel=True, weight_type=QuantType.QInt8,
            nodes_to_quantize=include,
            # DefaultTensorType: the type of a value ONNX's shape inference cannot give (the
            # output of a contrib operator inside a subgraph): archc's graphs compute in fp32
            extra_options={"EnableSubgraph": True, "MatMulConstBOnly": True,
                           "DefaultTensorType": onnx.TensorProto.FLOAT}))


def quantize_nbits(proto: onnx.ModelProto, uses: list[WeightUse], bits: int, block_size: int) -> onnx.ModelProto:
    """Block-wise weights with one fp32 scale per block (`MatMulNBits`; its 4-bit path also makes
    `GatherBlockQuantized` lookups), activations quantized to int8 per block inside the kernel
    (accuracy_level 4)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    include = sorted({u.node for u in uses if u.quantize})
    if not include:
        return proto
    with quiet_quantizer():
        # (its nodes_to_include does not stop it quantizing a Gather: the complement is excluded)
        q = MatMulNBitsQuantizer(proto, bits=bits, block_size=block_size, is_symmetric=True,
                                 nodes_to_exclude=sorted({u.node for u in uses if not u.quantize}),
                                 op_types_to_quantize=("MatMul", "Gather") if bits == 4 else ("MatMul",),
                                 quant_axes=(("MatMul", 0), ("Gather", 1)), accuracy_level=4)
        q.process()
    return q.model.model


# -- tied tables ------------------------------------------------------------------------------


def share_tied_tables(proto: onnx.ModelProto) -> list[str]:
    """Rewrite each embedding lookup of a table whose transpose the (tied) head reads quantized,
    to gather rows of the head's quantized weight: the fp32 table is then unused and dropped.
    Returns the tables shared. In place."""
    inits = {i.name: i for i in proto.graph.initializer}
    shared = []
    for n in list(_walk_with_parent(proto.graph)):
        node, parent = n
        if node.op_type != "Gather" or node.input[0] not in inits or _axis(node) != 0:
            continue
        table = node.input[0]
        ids, out = node.input[1], node.output[0]
        if f"{table}.T_quantized" in inits and f"{table}.T_scale" in inits:
            zp = inits.get(f"{table}.T_zero_point")
            if zp is not None and np.any(numpy_helper.to_array(zp) != 0):
                continue  # asymmetric weights: not what the int8 schemes write
            new = _int8_rows(node.name, f"{table}.T_quantized", f"{table}.T_scale", ids, out)
        elif f"{table}.T_Q4" in inits and f"{table}.T_scales" in inits:
            new = _nbits_rows(proto.graph, node.name, table, inits, ids, out, 4)
        elif f"{table}.T_Q8" in inits and f"{table}.T_scales" in inits:
            new = _nbits_rows(proto.graph, node.name, table, inits, ids, out, 8)
        else:
            continue
        i = list(parent.node).index(node)
        parent.node.remove(node)
        for k, m in enumerate(new):
            parent.node.insert(i + k, m)
        shared.append(table)
    if shared:
        used = {i for m in walk(proto.graph) for i in m.input}
        keep = [i for i in proto.graph.initializer if i.name in used]
        del proto.graph.initializer[:]
        proto.graph.initializer.extend(keep)
        if not any(o.domain == "com.microsoft" for o in proto.opset_import):
            proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return sorted(set(shared))


def _walk_with_parent(graph: onnx.GraphProto) -> Iterator[tuple[onnx.NodeProto, onnx.GraphProto]]:
    for n in list(graph.node):
        yield n, graph
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _walk_with_parent(a.g)
            for g in a.graphs:
                yield from _walk_with_parent(g)


def _axis(n: onnx.NodeProto) -> int:
    return next((helper.get_attribute_value(a) for a in n.attribute if a.name == "axis"), 0)


def _int8_rows(name: str, weight_q: str, scale: str, ids: str, out: str) -> list[onnx.NodeProto]:
    """rows = W_q[:, ids]ᵀ · scale[ids]: the head's int8 weight is [d, vocab] with one scale per
    vocabulary entry (per-channel along its output axis), so a row of the table is a column of it."""
    p = f"{name}/shared"
    return [
        helper.make_node("Gather", [weight_q, ids], [f"{p}/cols"], name=f"{p}/Gather", axis=1),  # [d, B, T]
        helper.make_node("Transpose", [f"{p}/cols"], [f"{p}/rows"], name=f"{p}/Transpose", perm=[1, 2, 0]),
        helper.make_node("Cast", [f"{p}/rows"], [f"{p}/rows_f"], name=f"{p}/Cast", to=TensorProto.FLOAT),
        helper.make_node("Gather", [scale, ids], [f"{p}/scale"], name=f"{p}/GatherScale", axis=0),
        helper.make_node("Unsqueeze", [f"{p}/scale", "const.shared_last_axis"], [f"{p}/scale_1"],
                         name=f"{p}/Unsqueeze"),
        helper.make_node("Mul", [f"{p}/rows_f", f"{p}/scale_1"], [out], name=f"{p}/Mul"),
    ]


def _nbits_rows(graph: onnx.GraphProto, name: str, table: str, inits: dict, ids: str, out: str,
                bits: int) -> list[onnx.NodeProto]:
    """The head's MatMulNBits weight [vocab, blocks, block·bits/8] is the table's rows (4-bit: two
    values a byte) with one scale per block: `GatherBlockQuantized` reads it as [vocab, d·bits/8].
    A width that is not a multiple of the block was padded by the quantizer: the rows are cut back
    to the table's width."""
    q = inits[f"{table}.T_Q{bits}"]
    vocab, blocks, blob = q.dims
    block = blob * 8 // bits
    width = int(inits[table].dims[1])
    p = f"{name}/shared"
    shape = f"const.{table}.rows_shape"
    if shape not in inits:
        graph.initializer.append(numpy_helper.from_array(np.array([vocab, blocks * blob], np.int64), shape))
        inits[shape] = graph.initializer[-1]
    ins = [f"{p}/packed", ids, f"{table}.T_scales"]
    if f"{table}.T_zero_points" in inits:
        ins.append(f"{table}.T_zero_points")
    padded = blocks * block > width
    nodes = [
        helper.make_node("Reshape", [f"{table}.T_Q{bits}", shape], [f"{p}/packed"], name=f"{p}/Reshape"),
        helper.make_node("GatherBlockQuantized", ins, [f"{p}/padded" if padded else out],
                         name=f"{p}/GatherBlockQuantized", domain="com.microsoft", gather_axis=0, quantize_axis=1,
                         block_size=block, bits=bits),
    ]
    if padded:
        ends = f"const.{table}.width"
        if ends not in inits:
            graph.initializer.append(numpy_helper.from_array(np.array([width], np.int64), ends))
            inits[ends] = graph.initializer[-1]
        _add_shared_constants(graph)
        nodes.append(helper.make_node("Slice", [f"{p}/padded", "const.shared_zero", ends, "const.shared_last_axis"],
                                      [out], name=f"{p}/Slice"))
    return nodes


def _add_shared_constants(graph: onnx.GraphProto) -> None:
    have = {i.name for i in graph.initializer}
    for name, value in (("const.shared_last_axis", -1), ("const.shared_zero", 0)):
        if name not in have:
            graph.initializer.append(numpy_helper.from_array(np.array([value], np.int64), name))


def _drop_node_metadata(graph: onnx.GraphProto) -> None:
    """torch.onnx's per-node metadata (the module path and class of each node: 7% of rwkv-tiny's
    fp32 file) is for debugging an export; an edge file has no use for it. The node names, which
    carry the IR node ids, stay."""
    for n in walk(graph):
        del n.metadata_props[:]


# -- one call ---------------------------------------------------------------------------------


@dataclass
class Quantized:
    model: onnx.ModelProto
    scheme: str  # the scheme applied (int8 resolves to int8_dynamic or int8_static)
    uses: list[WeightUse]
    shared: list[str] = field(default_factory=list)


def quantize_model(proto: onnx.ModelProto, graph: Graph, options: QuantizeOptions, calibration: Calibration | None = None,
                   manifest: object = None) -> Quantized:
    """The exported model quantized with `options.scheme` (int8_dynamic, int8_static, int8_block or
    int4; `int8` — the best of the int8 schemes — is chosen by `export.quantize_export`, which
    measures both). int8_static needs `calibration` (a `calibrate.Calibration`) and, for a
    decoder, the export's `manifest` (its state)."""
    scheme = tool_scheme(options.scheme)
    uses = plan(proto, graph, options)
    tied = {u.weight for u in uses if u.why.startswith("shared:")}
    prepared = to_quantizer_layout(proto, uses)
    if scheme == "int8_static" and calibration is None:
        raise QuantizeError("int8_static needs calibration data",
                            "pass --calibrate TASK:N (e.g. chars:256) or --calibrate FILE.txt:N", code="ARC1107")
    try:
        if scheme == "int8_dynamic":
            q = quantize_dynamic_int8(prepared, uses)
        elif scheme in ("int4", "int8_block"):
            q = quantize_nbits(prepared, uses, 4 if scheme == "int4" else 8, options.block_for(scheme))
        else:
            q = quantize_static_int8(prepared, uses, calibration, options.method, manifest)
    except QuantizeError:
        raise
    except Exception as e:  # onnxruntime's tool failed on this graph: say which tool and why
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise QuantizeError(f"onnxruntime's {scheme} quantizer failed: {type(e).__name__}: {first[:200]}",
                            "try another --quantize scheme, or --keep fp32:CLASS for the class it failed on "
                            "(--explain lists them)", code="ARC1105") from e
    _add_shared_constants(q.graph)
    shared = share_tied_tables(q)
    for u in uses:
        if u.weight in tied and u.op_type == "Gather" and u.weight not in shared:
            u.why = "kept fp32: the tied head's quantized weight could not be shared"
    _drop_node_metadata(q.graph)
    model = ir.serde.deserialize_model(q)
    with quiet_quantizer():
        for p in (onnx_ir.passes.common.RemoveUnusedNodesPass(), onnx_ir.passes.common.RemoveUnusedOpsetsPass()):
            p(model)
    return Quantized(ir.serde.serialize_model(model), scheme, uses, shared)


__all__ = ["Quantized", "quantize_model", "share_tied_tables", "to_quantizer_layout"]
