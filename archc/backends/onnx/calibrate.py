"""Calibration data and static int8 (QDQ) quantization of an exported model.

Calibration sequences come from one of the built-in task generators (`chars:256`: 256 sequences
of the chars task) or from a user's text file (`notes.txt:256`: 256 windows of its bytes, for a
byte-level vocabulary). `quantize_static_int8` hands them to onnxruntime's `quantize_static`
(QDQ format, the calibrator of the method asked for). onnxruntime calibrates and inserts QDQ
pairs in the main graph only, and a decoder's main graph is an `If` whose branches hold every
node: so each branch is cut out as a model of its own — its outer-scope values (the token ids,
the positions, the state, the weights) become inputs and initializers — calibrated on the values
that branch really sees (the prefill branch on whole sequences, the decode branch on single-token
steps through the state, both captured by running the fp32 model), quantized, and put back.
The weights' quantized copies are the same in both branches (their scales depend on the weights
alone) and are stored once.
"""

from __future__ import annotations

import heapq
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from archc.backends.onnx.precision import QuantizeError, WeightUse, quiet_quantizer


@dataclass
class Calibration:
    """Token sequences [n, seq] to calibrate on, and where they came from."""

    ids: np.ndarray
    source: str
    #: decode steps captured per sequence for the decode branch (after a prefill of half of it)
    decode_steps: int = 8


def parse_source(text: str) -> tuple[str, int]:
    """`chars:256` / `notes.txt:256` / `chars` -> (source, count); 256 sequences by default."""
    name, sep, count = text.rpartition(":")
    if not sep or not count.isdigit():
        return text, 256
    return name, int(count)


def calibration_data(source: str, count: int, seq: int, vocab: int, seed: int = 0) -> Calibration:
    """`count` sequences of `seq` tokens from a task generator (by name) or a text file (by path,
    byte-level: the model's vocabulary must hold 256 bytes); `tasks.token_sequences`."""
    from archc.backends.torch.tasks import TASKS, token_sequences

    try:
        ids = token_sequences(source, count, seq, vocab, seed).numpy().astype(np.int64)
    except ValueError as e:
        raise QuantizeError(str(e), "pass --calibrate TASK:N (e.g. chars:256) or --calibrate FILE.txt:N",
                            code="ARC1107") from None
    what = f"from the {source} task" if source in TASKS else f"windows of {Path(source).name}"
    return Calibration(ids, f"{count} sequences of {seq} tokens {what}")


# -- a branch as a model of its own ---------------------------------------------------------


def _outer_names(graph: onnx.GraphProto) -> list[str]:
    """Values a (sub)graph reads from enclosing scopes, in first-use order."""
    seen: list[str] = []

    def visit(g: onnx.GraphProto, local: set[str]) -> None:
        local = local | {i.name for i in g.input} | {i.name for i in g.initializer}
        for n in g.node:
            for i in n.input:
                if i and i not in local and i not in seen:
                    seen.append(i)
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    visit(a.g, local)
                for sub in a.graphs:
                    visit(sub, local)
            local |= set(n.output)

    visit(graph, set())
    return seen


def _types(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=False)
    out = {v.name: v for v in list(inferred.graph.input) + list(inferred.graph.value_info)}
    return out


def _standalone(model: onnx.ModelProto, branch: onnx.GraphProto, types: dict) -> tuple[onnx.ModelProto, list[str]]:
    inits = {i.name: i for i in model.graph.initializer}
    outer = _outer_names(branch)
    ins = [n for n in outer if n not in inits]
    missing = [n for n in ins if n not in types]
    if missing:
        raise QuantizeError(f"the type of {missing[0]!r} could not be inferred: the branch cannot be calibrated alone",
                            "use --quantize int8_dynamic or int4", code="ARC1108")
    # values read only inside a Loop/Scan body look unused to the quantizer (it does not look into
    # subgraphs) and would be dropped: they are made outputs while it runs (`_put_back` strips them)
    produced = {o for n in branch.node for o in n.output}
    inner = [v for n in branch.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH
             for v in _outer_names(a.g) if v in produced]
    held = [types.get(v) or helper.make_empty_tensor_value_info(v) for v in dict.fromkeys(inner)]
    g = helper.make_graph(list(branch.node), branch.name, [types[n] for n in ins], list(branch.output) + held,
                          initializer=[inits[n] for n in outer if n in inits])
    m = helper.make_model(g, opset_imports=list(model.opset_import), functions=list(model.functions))
    m.ir_version = model.ir_version
    return m, ins


def _capture(model: onnx.ModelProto, names: list[str], feeds_list: list[dict]) -> list[dict]:
    """The values of main-graph tensors `names` for each feed dict (graph inputs are the feeds
    themselves; computed ones are added as outputs of a copy of the model)."""
    import onnxruntime as ort

    inputs = {i.name for i in model.graph.input}
    computed = [n for n in names if n not in inputs]
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for n in computed:
        m.graph.output.append(helper.make_empty_tensor_value_info(n))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.onnx")
        onnx.save(m, path)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        out = []
        for feeds in feeds_list:
            vals = dict(zip(computed, sess.run(computed, feeds), strict=True)) if computed else {}
            out.append({n: feeds[n] if n in inputs else vals[n] for n in names})
    return out


def _main_feeds(model: onnx.ModelProto, folder_manifest, cal: Calibration) -> tuple[list[dict], list[dict]]:
    """Feed dicts of the main graph: whole sequences from a fresh state (they take the prefill
    branch), and single-token steps after a prefill of half the sequence (the decode branch)."""
    import onnxruntime as ort

    from archc.backends.onnx.runtime import _DTYPES

    state = folder_manifest.state

    def fresh(batch: int) -> dict:
        out = {}
        for s in state:
            shape = [batch if d == "batch" else 0 if d == "past_seq" else int(d) for d in s.shape]
            out[s.input] = np.broadcast_to(np.asarray(s.fill, dtype=_DTYPES[s.dtype]), shape).copy()
        return out

    prefill = []
    for row in cal.ids:
        f = {"input_ids": row[None], "attention_mask": np.ones((1, len(row)), np.int64)}
        f.update(fresh(1))
        prefill.append(f)
    decode = []
    if state and cal.decode_steps:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        outs = ["logits", *(s.output for s in state)]
        half = cal.ids.shape[1] // 2
        n = min(len(cal.ids), max(1, 2048 // cal.decode_steps))  # a few thousand steps are plenty
        for row in cal.ids[:n]:
            f = {"input_ids": row[None, :half], "attention_mask": np.ones((1, half), np.int64)}
            f.update(fresh(1))
            res = sess.run(outs, f)
            for t in range(half, min(half + cal.decode_steps, len(row))):
                f = {"input_ids": row[None, t:t + 1], "attention_mask": np.ones((1, t + 1), np.int64)}
                f.update({s.input: v for s, v in zip(state, res[1:], strict=True)})
                decode.append(f)
                res = sess.run(outs, f)
    return prefill, decode


def _rename_inputs(graph: onnx.GraphProto, names: dict[str, str]) -> None:
    """Every read of a renamed value, subgraphs included."""
    for n in graph.node:
        n.input[:] = [names.get(i, i) for i in n.input]
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                _rename_inputs(a.g, names)
            for g in a.graphs:
                _rename_inputs(g, names)


def _topologically_sorted(nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """Nodes in an order where each comes after the producers of everything it reads, the values
    its Loop/Scan bodies read from outside included (onnxruntime's quantizer sorts by explicit
    inputs only, and may place a Loop before the node computing a value its body reads)."""
    # an empty name is an omitted optional input or output (SkipSimplifiedLayerNormalization's
    # unused mean and inv_std_var), not a value: it links nothing
    produced = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    deps = []
    for n in nodes:
        reads = [i for i in n.input if i] + [v for a in n.attribute if a.type == onnx.AttributeProto.GRAPH
                                            for v in _outer_names(a.g)]
        deps.append({produced[r] for r in reads if r in produced})
    users: list[list[int]] = [[] for _ in nodes]
    waiting = [len(d) for d in deps]
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)  # Kahn's algorithm, the given order breaking ties
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i])
        for k in users[i]:
            waiting[k] -= 1
            if waiting[k] == 0:
                heapq.heappush(ready, k)
    if len(order) != len(nodes):
        raise QuantizeError("the quantized branch has a cycle", code="ARC1108")
    return order


class _Reader:
    """onnxruntime's `CalibrationDataReader` protocol: `get_next()` returns a feed dict or None."""

    def __init__(self, feeds: list[dict]) -> None:
        self.feeds = iter(feeds)

    def get_next(self) -> dict | None:
        return next(self.feeds, None)

    def rewind(self) -> None:  # not needed: each calibrator pass gets a fresh reader
        pass


def _qdq(model: onnx.ModelProto, uses: list[WeightUse], feeds: list[dict], method: str) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    names = {n.name for n in model.graph.node}
    include = sorted({u.node for u in uses if u.quantize} & names)
    if not include or not feeds:
        return model
    ops = sorted({u.op_type if u.op_type != "Gemm" else "MatMul" for u in uses if u.quantize and u.node in names})
    calib = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory() as d, quiet_quantizer():
        out = os.path.join(d, "q.onnx")
        quantize_static(model, out, _Reader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=ops,
                        nodes_to_quantize=include, calibrate_method=calib,
                        extra_options={"MatMulConstBOnly": True, "WeightSymmetric": True,
                                       "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1}},
                        calibration_providers=["CPUExecutionProvider"])
        return onnx.load(out)


def quantize_static_int8(model: onnx.ModelProto, uses: list[WeightUse], cal: Calibration, method: str,
                         manifest=None) -> onnx.ModelProto:
    """QDQ int8 with activations calibrated by `method` on `cal`; see the module docstring."""
    iff = next((n for n in model.graph.node if n.op_type == "If"), None)
    if iff is None and manifest is not None and manifest.state:
        # a decoder in one graph (`--target ort`: GroupQueryAttention takes any number of new
        # tokens): calibrated on whole sequences and on single-token steps alike
        prefill_feeds, decode_feeds = _main_feeds(model, manifest, cal)
        return _qdq(model, uses, prefill_feeds + decode_feeds, method)
    if iff is None:  # a forward graph, or a stateless decoder: one graph
        feeds = [{"input_ids": r[None], "attention_mask": np.ones((1, len(r)), np.int64)} for r in cal.ids]
        feeds = [{k: v for k, v in f.items() if k in {i.name for i in model.graph.input}} for f in feeds]
        return _qdq(model, uses, feeds, method)
    if manifest is None:
        raise QuantizeError("static quantization of a decoder needs its manifest", code="ARC1108")
    types = _types(model)
    prefill_feeds, decode_feeds = _main_feeds(model, manifest, cal)
    branches = {a.name: a.g for a in iff.attribute if a.type == onnx.AttributeProto.GRAPH}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    new_iff = next(n for n in out.graph.node if n.op_type == "If")
    inits = {i.name: i for i in out.graph.initializer}
    for attr, feeds in (("then_branch", prefill_feeds), ("else_branch", decode_feeds)):
        alone, ins = _standalone(model, branches[attr], types)
        q = _qdq(alone, uses, _capture(model, ins, feeds), method)
        renamed: dict[str, str] = {}
        for init in q.graph.initializer:
            have = inits.get(init.name)
            if have is not None and have.raw_data != init.raw_data and numpy_helper.to_array(have).tobytes() != \
                    numpy_helper.to_array(init).tobytes():
                # a tensor that depends on the branch's activation scales (a Conv's int32 bias is
                # scaled by its input's scale): each branch keeps its own copy
                renamed[init.name] = f"{init.name}.{attr}"
                init.name = renamed[init.name]
                have = None
            if have is None:
                out.graph.initializer.append(init)
                inits[init.name] = init
        if renamed:
            _rename_inputs(q.graph, renamed)
        branch = next(a for a in new_iff.attribute if a.name == attr)
        del branch.g.node[:]
        branch.g.node.extend(_topologically_sorted(list(q.graph.node)))
        for o in q.opset_import:
            if not any(x.domain == o.domain for x in out.opset_import):
                out.opset_import.append(o)
    return out


__all__ = ["Calibration", "calibration_data", "parse_source", "quantize_static_int8"]
