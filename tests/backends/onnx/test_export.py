"""The ONNX backend against the torch modules it exports, in onnxruntime: decoders (attention and
a recurrent mixer) over a prefill and one-token steps through the exported state, an encoder's
forward graph with padding, and the export folder's contract (names, manifest, weights)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

import archc
from archc.backends.onnx.export import check_parity, export_model, section_pruned
from archc.backends.onnx.precision import QuantizeOptions
from archc.backends.torch import build

# Tolerances: fp32 in both runtimes with different GEMM kernels and summation orders (onnxruntime's
# MLAS vs torch's oneDNN/MKL), ~1e-7 relative per op over a few dozen ops on logits of order 1–10:
# observed 1e-6 to 2e-5 here; 1e-4 is the bound and leaves a margin for other CPUs.


def test_decoder_equals_torch_over_prefill_and_steps(decoder_export):
    model, root, _ = decoder_export
    rows = check_parity(model, root / "out", lengths=(1, 17, 100), prefill=20, steps=12, atol=1e-4)
    assert all(r.ok for r in rows), rows


def test_decoder_names_follow_genai_and_weights_keep_their_keys(decoder_export):
    model, root, report = decoder_export
    proto = onnx.load(root / "out" / "model.onnx")
    inputs = [i.name for i in proto.graph.input]
    assert inputs[:2] == ["input_ids", "attention_mask"]
    assert inputs[2:] == [f"past_key_values.{i}.{kv}" for i in range(2) for kv in ("key", "value")]
    assert [o.name for o in proto.graph.output] == ["logits"] + [f"present.{i}.{kv}" for i in range(2) for kv in ("key", "value")]
    keys = {k for k, _ in model.named_parameters()}
    inits = {i.name: i for i in proto.graph.initializer}
    # every weight under its state_dict key; the tied lm_head weight stored once, as embed.weight;
    # what else is there are the traced code's folded constants, not copies of weights, and one
    # rotary cos/sin table for the whole model (GroupQueryAttention's caches), not one per layer
    assert keys <= set(inits) and "lm_head.weight" not in inits
    rope = sorted(n for n in inits if n.startswith("rope."))
    assert [n.rsplit(".", 1)[1] for n in rope] == ["cos", "sin"]
    weight_bytes = sum(len(inits[k].raw_data) for k in keys)
    other_bytes = sum(len(i.raw_data) + 4 * len(i.float_data) + 8 * len(i.int64_data)
                      for n, i in inits.items() if n not in keys and n not in rope)
    assert other_bytes < 0.01 * weight_bytes
    manifest = json.loads((root / "out" / "archc_export.json").read_text())
    assert manifest["kind"] == "decoder" and manifest["vocab"] == 300
    assert manifest["state"][0] == {"input": "past_key_values.0.key", "output": "present.0.key", "node": "layers.0.attn",
                                    "state": "key", "dtype": "float32", "shape": ["batch", 2, "past_seq", 16], "fill": 0.0,
                                    "kv": True, "scale_of": None, "axes": None}
    # exported at O2 for onnxruntime: the norms and attention are its operators (RMSNormalization,
    # SkipSimplifiedLayerNormalization, GroupQueryAttention: one graph, no If); traced are embed,
    # swiglu_packed and lm_head
    assert report.units == 3 and manifest["pipeline"] == "O2" and manifest["target"] == "ort"
    ops = {n.op_type for n in proto.graph.node}
    assert {"GroupQueryAttention", "SkipSimplifiedLayerNormalization", "RMSNormalization"} <= ops and "If" not in ops
    assert set(report.lowered.values()) == {"GroupQueryAttention", "SkipSimplifiedLayerNormalization",
                                            "RMSNormalization"} and not report.not_lowered
    # no node carries torch.onnx's Python stack (this machine's source paths, most of the bytes)
    nodes = [n for n in proto.graph.node] + [m for n in proto.graph.node for a in n.attribute
                                             if a.type == onnx.AttributeProto.GRAPH for m in a.g.node]
    assert not any(p.key == "pkg.torch.onnx.stack_trace" for n in nodes for p in n.metadata_props)
    assert any(p.key == "namespace" for n in nodes for p in n.metadata_props)  # module paths stay


def test_layers_share_one_exported_graph(decoder_export):
    """Two identical layers cost one export of each distinct node: the unit count does not grow
    with depth."""
    _, _, report = decoder_export
    deeper = archc.loads(archc_spec_with_layers(4), "deep.arch").graph
    model = build(deeper, seed=0).eval()
    from archc.backends.onnx.assemble import Assembler

    assert Assembler(model, 23).decoder().units == report.units


def archc_spec_with_layers(n: int) -> str:
    from tests.backends.onnx.conftest import DECODER

    return DECODER.replace("repeat(2, layer)", f"repeat({n}, layer)")


RECURRENT = """
model rec(tokens) {
  block layer(x) {
    return x + mamba(rmsnorm(x), d_state=8)
  }
  x = embed(tokens, 64, 32)
  x = repeat(2, layer)(x)
  return lm_head(rmsnorm(x), tied=true)
}
"""


def test_recurrent_decoder_takes_the_recurrent_form_for_one_token(tmp_path):
    """Mamba: the prefill branch runs the chunked scan, one-token steps the recurrence (lowered
    directly); both equal the torch forward, and the state is `conv_state` / `recurrent_state` per
    layer."""
    model = build(archc.loads(RECURRENT, "rec.arch").graph, seed=0).eval()
    report = export_model(model, tmp_path / "out", RECURRENT, "rec", "random")
    names = [s.input for s in report.manifest.state]
    assert names == ["past_key_values.0.conv_state", "past_key_values.0.recurrent_state",
                     "past_key_values.1.conv_state", "past_key_values.1.recurrent_state"]
    rows = check_parity(model, tmp_path / "out", lengths=(1, 40), prefill=24, steps=8, atol=1e-4)
    assert all(r.ok for r in rows), rows
    graph = onnx.load(tmp_path / "out" / "model.onnx").graph
    assert [n.op_type for n in graph.node][-1] == "If"
    # the one-token step is written with standard operators (archc/backends/onnx/ops/mamba.py),
    # the prefill's selective scan is the traced module's
    branches = {a.name: {n.op_type for n in a.g.node} for a in graph.node[-1].attribute}
    assert "ReduceSum" in branches["else_branch"] and "Conv" not in branches["else_branch"]
    assert "Conv" in branches["then_branch"]
    assert {report.lowered[f"layers.{i}.mixer"] for i in range(2)} == {"mamba as standard operators (decode only)"}
    # the last position's logits only (`--logits last`) through both branches of the `If`
    last = export_model(model, tmp_path / "last", RECURRENT, "rec", "random", logits="last")
    assert last.manifest.logits == "last"
    rows = check_parity(model, tmp_path / "last", lengths=(1, 40), prefill=24, steps=8, atol=1e-4)
    assert all(r.ok for r in rows) and all("last position" in r.what for r in rows if r.what.startswith("forward")), rows


ENCODER = """
model enc(tokens) {
  block layer(x) {
    x = layernorm(x + attention(x, heads=4))
    return layernorm(x + mlp(x, hidden=64, act="gelu"))
  }
  x = embed(tokens, 100, 32, token_types=2)
  x = x + learned_pos(x, max_len=128)
  x = repeat(2, layer)(x)
  return token_cls_head(x, classes=5)
}
"""


def test_encoder_forward_graph_with_padding(tmp_path):
    from archc.backends.onnx.runtime import OnnxModel

    model = build(archc.loads(ENCODER, "enc.arch").graph, seed=0).eval()
    report = export_model(model, tmp_path / "out", ENCODER, "enc", "random")
    assert report.manifest.kind == "forward"
    assert [p.name for p in report.manifest.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    sess = OnnxModel(tmp_path / "out").session
    for t in (5, 33):  # other lengths than the traced one
        ids = torch.randint(0, 100, (3, t))
        mask = torch.ones(3, t, dtype=torch.long)
        mask[1, t - 2:] = 0
        types = torch.randint(0, 2, (3, t))
        with torch.no_grad():
            ref = model(ids, attention_mask=mask, token_type_ids=types).logits.numpy()
        got = sess.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy(),
                                    "token_type_ids": types.numpy()})[0]
        real = mask.numpy().astype(bool)
        np.testing.assert_allclose(got[real], ref[real], atol=1e-4, rtol=1e-4)


def test_export_is_reproducible(decoder_export, tmp_path):
    model, root, _ = decoder_export
    from tests.backends.onnx.conftest import DECODER

    export_model(model, tmp_path / "again", DECODER, "small", "w.safetensors")
    assert (tmp_path / "again" / "model.onnx").read_bytes() == (root / "out" / "model.onnx").read_bytes()


@pytest.mark.parametrize("case", ["exists", "force-keeps-foreign-files"])
def test_existing_folder_is_refused_unless_forced(decoder_export, tmp_path, case):
    from archc.files import FileError
    from tests.backends.onnx.conftest import DECODER

    model = decoder_export[0]
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    if case == "exists":
        with pytest.raises(FileError, match="refusing to overwrite"):
            export_model(model, out, DECODER, "small", "w")
        return
    export_model(model, out, DECODER, "small", "w", force=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "model.onnx").exists()


def test_large_weights_go_to_external_data_inside_the_folder(decoder_export, tmp_path, monkeypatch):
    """Above the threshold (1.8 GB; lowered here) the weights are written to `model.onnx.data`
    beside the model, referenced by a relative location, and onnxruntime still matches torch."""
    from archc.backends.onnx import export as export_mod
    from tests.backends.onnx.conftest import DECODER

    monkeypatch.setattr(export_mod, "EXTERNAL_DATA_BYTES", 0)
    model = decoder_export[0]
    export_model(model, tmp_path / "big", DECODER, "small", "w")
    assert (tmp_path / "big" / "model.onnx.data").stat().st_size > 100_000
    proto = onnx.load(tmp_path / "big" / "model.onnx", load_external_data=False)
    locations = {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"model.onnx.data"}
    rows = check_parity(model, tmp_path / "big", lengths=(9,), prefill=4, steps=3)
    assert all(r.ok for r in rows), rows


S4_DECODER = """
model s4s(tokens) {
  x = embed(tokens, 64, 32)
  x = x + s4(layernorm(x), d_state=8)
  x = x + s4(layernorm(x), d_state=8, mode="dplr", rank=2, discretization="bilinear")
  return lm_head(layernorm(x))
}
"""


def test_s4_and_s4d_export_in_real_arithmetic(tmp_path):
    """S4D (ZOH) and S4 (DPLR, rank 2, bilinear) in one decoder: the exported form (the blocked
    recurrence over the real-coordinate system) equals torch's FFT/Cauchy kernels at lengths across
    the block boundaries, and the one-token steps the recurrence, through the ONNX state."""
    model = build(archc.loads(S4_DECODER, "s4s.arch").graph, seed=0).eval()
    report = export_model(model, tmp_path / "out", S4_DECODER, "s4s", "random")
    names = [s.input for s in report.manifest.state]
    assert len(names) == 2 and all(n.endswith(".recurrent_state") for n in names), names
    rows = check_parity(model, tmp_path / "out", lengths=(1, 31, 70), prefill=33, steps=4)
    assert all(r.ok for r in rows), rows


def test_an_op_torch_cannot_export_is_a_diagnostic_at_its_node(tmp_path, monkeypatch):
    """S4's eager form computes its kernel in complex arithmetic, which torch.onnx does not
    translate (no complex `expm1`): put back in place of the exported form, the failure comes back
    as an ExportError naming the op and carrying its node (the CLI's `.arch` line)."""
    from archc.backends.onnx import ExportError
    from archc.backends.torch.ops.s4 import S4

    monkeypatch.setattr(S4, "exported_conv", S4._conv)
    spec = """
model s(tokens) {
  x = embed(tokens, 64, 32)
  x = x + s4(layernorm(x), d_state=8)
  return lm_head(layernorm(x))
}"""
    model = build(archc.loads(spec, "s.arch").graph, seed=0).eval()
    with pytest.raises(ExportError, match="`s4` could not be exported") as err:
        export_model(model, tmp_path / "out", spec, "s", "w")
    assert err.value.node is not None and err.value.node.op == "s4" and err.value.node.span is not None


RMT = """
model r(tokens) {
  block decoder(x) {
    x = x + attention(rmsnorm(x), heads=4, kv_heads=2, causal=true, pos=rope())
    return x + swiglu(rmsnorm(x), hidden=64)
  }
  x = embed(tokens, 64, 32)
  x = recurrent_memory(x, block=repeat(2, decoder), memory=4, segment=8)
  return lm_head(rmsnorm(x), tied=true)
}
"""


def test_recurrent_memory_crosses_segments_at_any_length(tmp_path):
    """RMT (segments of 8, 4 memory tokens): the prefill is a loop over tokens with the segment
    boundaries' read and write as branches inside it, so lengths other than the traced one cross
    segments correctly (a traced token loop returned the traced count of positions), and the
    one-token steps carry the memory and the body's caches across boundaries."""
    model = build(archc.loads(RMT, "r.arch").graph, seed=0).eval()
    report = export_model(model, tmp_path / "out", RMT, "r", "random")
    assert report.manifest.state[0].state == "memory"
    rows = check_parity(model, tmp_path / "out", lengths=(1, 17, 40), prefill=11, steps=10)
    assert all(r.ok for r in rows), rows


WINDOWED = """
model w(tokens) {
  block decoder(x) {
    x = x + attention(rmsnorm(x), heads=4, kv_heads=2, causal=true, window=80, pos=rope())
    return x + swiglu(rmsnorm(x), hidden=64)
  }
  x = embed(tokens, 64, 32)
  x = repeat(2, decoder)(x)
  return lm_head(rmsnorm(x))
}
"""


def test_sliding_window_cache_is_a_fixed_ring_buffer(tmp_path):
    """A window longer than the exporter's example cache (64) stays a fixed [.., 80, ..] ring
    buffer (it was traced as a dynamic axis, and torch.onnx could not take `positions mod size`
    for a symbolic size), and the steps wrap around it correctly."""
    model = build(archc.loads(WINDOWED, "w.arch").graph, seed=0).eval()
    report = export_model(model, tmp_path / "out", WINDOWED, "w", "random")
    assert report.manifest.state[0].shape == ["batch", 2, 80, 8]
    rows = check_parity(model, tmp_path / "out", lengths=(1, 100), prefill=70, steps=20)
    assert all(r.ok for r in rows), rows


def _with_export_section(spec: str) -> str:
    """conftest's decoder with an `export onnx` section before its closing brace."""
    return spec.rstrip().removesuffix("}") + "  export onnx {\n    opset = 20\n    step = false\n    quantize = \"int8\"\n  }\n}\n"


def test_the_specs_export_section_is_honoured(tmp_path):
    """`export onnx { opset = 20  step = false  quantize = "int8" }`: opset 20 (no `Attention`
    operator), a forward graph of logits without state, quantized (int8 without calibration data:
    dynamic) with the fp32 export kept in `reference/`."""
    from tests.backends.onnx.conftest import DECODER

    section = _with_export_section(DECODER)
    model = build(archc.loads(section, "s.arch").graph, seed=0).eval()
    report = export_model(model, tmp_path / "out", section, "s", "random")
    assert report.manifest.kind == "forward" and report.manifest.opset == 20 and not report.manifest.state
    assert report.manifest.quantization.scheme == "int8_dynamic" and report.reference == tmp_path / "out" / "reference"
    proto = onnx.load(tmp_path / "out" / "reference" / "model.onnx")
    assert {o.version for o in proto.opset_import if o.domain == ""} == {20}
    assert "Attention" not in {n.op_type for n in proto.graph.node}
    assert "MatMulInteger" in {n.op_type for n in onnx.load(tmp_path / "out" / "model.onnx").graph.node}
    for folder in (tmp_path / "out" / "reference", tmp_path / "out"):
        rows = check_parity(model, folder, lengths=(1, 17))
        assert all(r.ok for r in rows), rows
    pruned = section.replace("step = false", "step = false\n    prune = ffn(0.25)")
    small, text, what = section_pruned(build(archc.loads(pruned, "s.arch").graph, seed=0), pruned)
    assert "hidden=48" in text and "ffn(0.25)" in what and small.num_parameters() < model.num_parameters()
    given = export_model(model, tmp_path / "opset23", section, "s", "random", opset=23,  # arguments win
                         quantize=QuantizeOptions("none"))
    assert given.manifest.opset == 23 and given.manifest.quantization is None
    assert "Attention" in {n.op_type for n in onnx.load(tmp_path / "opset23" / "model.onnx").graph.node}


def test_a_model_of_two_inputs_exports_with_each_length_named(tmp_path):
    """An encoder–decoder's second input has its own length (`seq_tgt`), which the manifest
    names (a regression: the manifest's schema once refused it)."""
    text = """
model ed(src, tgt) {
  m = embed(src, 50, 32)
  y = embed(tgt, 50, 32)
  y = y + attention(rmsnorm(y), kv=m, heads=2)
  return lm_head(rmsnorm(y), tied=true)
}
"""
    model = build(archc.loads(text, "ed.arch").graph, seed=0).eval()
    report = export_model(model, tmp_path / "ed", text, "ed", "random")
    assert [p.shape for p in report.manifest.inputs[:2]] == [["batch", "seq"], ["batch", "seq_tgt"]]
    assert all(r.ok for r in check_parity(model, tmp_path / "ed", lengths=(5,)))
