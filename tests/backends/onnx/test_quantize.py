"""Quantized exports: onnxruntime's tools steered by the ops' precision rules. Each scheme still
passes the parity machinery against the torch module (within its documented bound), the rules
decide what the tool touches, tied tables are stored once, and bad options are diagnostics."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import archc
from archc.backends.onnx.calibrate import calibration_data
from archc.backends.onnx.export import QUANTIZED_TOLERANCE, check_parity, export_model
from archc.backends.onnx.precision import QuantizeError, QuantizeOptions, parse_keep, plan
from archc.backends.torch import build

ROOT = Path(__file__).resolve().parents[3]

MAMBA = """
model m(tokens) {
  block layer(x) {
    return x + mamba(rmsnorm(x), d_state=8, expand=2, d_conv=4)
  }
  x = embed(tokens, 300, 32)
  x = repeat(2, layer)(x)
  return lm_head(rmsnorm(x), tied=true)
}
"""


def _ops(path: Path) -> set[str]:
    m = onnx.load(path)
    out = set()

    def walk(g):
        for n in g.node:
            out.add(n.op_type)
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
    walk(m.graph)
    return out


def _rope_bytes(path) -> int:
    return sum(len(i.raw_data) for i in onnx.load(path).graph.initializer if i.name.startswith("rope."))


@pytest.mark.parametrize("scheme", ["int8_dynamic", "int8_static", "int8_block", "int4"])
def test_each_scheme_passes_parity_within_its_bound(decoder_export, tmp_path, scheme):
    """The small GQA decoder quantized three ways: the fp32 reference is exact, the quantized model
    within the scheme's bound over every parity case, its weights in the scheme's operators, and
    the tied embedding table stored once (the head's quantized copy serves the lookup)."""
    model, _, _ = decoder_export
    cal = calibration_data("chars", 16, 32, 300) if scheme == "int8_static" else None
    report = export_model(model, tmp_path / "q", "", "small", "w", quantize=QuantizeOptions(scheme), calibration=cal)
    q = report.manifest.quantization
    assert q.scheme == scheme and q.shared_tables == ["embed.weight"]
    # int8/int4 tables; the tiny graph's structure is the rest, and the fp32 rotary table pair of
    # GroupQueryAttention (8,192 positions: 0.5 MB here, the size of the weights), left out
    tables = _rope_bytes(tmp_path / "q" / "model.onnx")
    assert tables > 0 and report.bytes - tables < 0.45 * (report.reference_bytes - tables)
    ops = _ops(tmp_path / "q" / "model.onnx")
    expected = {"int8_dynamic": "MatMulInteger", "int8_static": "DequantizeLinear", "int8_block": "MatMulNBits",
                "int4": "MatMulNBits"}[scheme]
    assert expected in ops
    inits = {i.name for i in onnx.load(tmp_path / "q" / "model.onnx").graph.initializer}
    assert "embed.weight" not in inits  # the fp32 table is gone
    by_weight = {w.weight: w for w in q.weights}
    assert by_weight["embed.weight"].precision == ("int4" if scheme == "int4" else "int8")
    assert by_weight["layers.0.attn.qkv_proj.weight"].precision != "fp32"  # exported at O2: q, k, v packed
    rows = check_parity(model, tmp_path / "q", lengths=(1, 17), steps=16)
    assert all(r.ok for r in rows), rows
    assert max(r.max_abs for r in rows) < QUANTIZED_TOLERANCE[scheme]
    assert max(r.max_abs for r in rows) > 1e-4  # it is quantized: not the fp32 model again
    assert all(r.ok for r in check_parity(model, tmp_path / "q" / "reference", lengths=(17,), steps=4))


@pytest.fixture(scope="module")
def mamba_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("mamba")
    model = build(archc.loads(MAMBA, "m.arch").graph, seed=1).eval()
    export_model(model, root / "fp32", MAMBA, "m", "random")
    return model, root


def test_the_precision_rule_decides_what_the_tool_touches(mamba_export):
    """Mamba: projections quantized; Δ's projection and the conv stay fp32 under the rules, and
    are quantized when the rules are off (mixer-blind) or overridden with --keep."""
    model, root = mamba_export
    proto = onnx.load(root / "fp32" / "model.onnx")
    uses = {(u.weight, u.op_type): u for u in plan(proto, model.graph, QuantizeOptions("int8_dynamic"))}
    assert uses[("layers.0.mixer.in_proj.weight", "MatMul")].quantize
    assert uses[("layers.0.mixer.x_proj.weight", "MatMul")].quantize
    dt = uses[("layers.0.mixer.dt_proj.weight", "MatMul")]
    assert not dt.quantize and dt.cls == "discretization" and "exp(Δ·A)" in dt.why
    assert not uses[("layers.0.mixer.conv1d.weight", "Conv")].quantize
    blind = {(u.weight, u.op_type): u for u in plan(proto, model.graph, QuantizeOptions("int8_dynamic",
                                                                                        mixer_blind=True))}
    assert blind[("layers.0.mixer.dt_proj.weight", "MatMul")].quantize
    assert "fails on a weight held outside the If branch" in blind[("layers.0.mixer.conv1d.weight", "Conv")].why
    static = {(u.weight, u.op_type): u for u in plan(proto, model.graph, QuantizeOptions("int8_static",
                                                                                         mixer_blind=True))}
    assert static[("layers.0.mixer.conv1d.weight", "Conv")].quantize
    over = QuantizeOptions("int8_dynamic", overrides=parse_keep(["int8:discretization", "fp32:projection"]))
    forced = {(u.weight, u.op_type): u for u in plan(proto, model.graph, over)}
    assert forced[("layers.0.mixer.dt_proj.weight", "MatMul")].quantize
    assert not forced[("layers.0.mixer.in_proj.weight", "MatMul")].quantize
    assert forced[("layers.0.mixer.in_proj.weight", "MatMul")].why == "kept fp32: --keep"


def test_static_int8_of_a_recurrent_decoder_calibrates_both_branches(mamba_export, tmp_path):
    """A decoder whose prefill branch holds Scan/Loop bodies: static QDQ through the branch split
    (values read only inside a body survive, the order is repaired), activation scales for the
    prefill and the decode branch, and parity through prefill + steps."""
    model, root = mamba_export
    from archc.backends.onnx.compress import quantize_folder

    cal = calibration_data("chars", 8, 32, 300)
    quantize_folder(tmp_path / "q", model.graph, QuantizeOptions("int8_static", method="percentile"), cal,
                    reference=root / "fp32")
    proto = onnx.load(tmp_path / "q" / "model.onnx")
    scales = {i.name for i in proto.graph.initializer if i.name.endswith("_scale")}
    assert any(s.startswith("prefill/") for s in scales) and any(s.startswith("decode/") for s in scales)
    rows = check_parity(model, tmp_path / "q", lengths=(17,), steps=16)
    assert all(r.ok for r in rows), rows


def test_int8_picks_the_scheme_that_agrees_more_on_held_out_data(mamba_export, tmp_path):
    model, root = mamba_export
    from archc.backends.onnx.compress import quantize_folder

    cal = calibration_data("chars", 8, 32, 300)
    held = calibration_data("chars", 4, 32, 300, seed=1).ids
    report = quantize_folder(tmp_path / "q", model.graph, QuantizeOptions("int8"), cal, held, reference=root / "fp32")
    q = report.quantization
    assert set(q.candidates) == {"int8_dynamic", "int8_block", "int8_static"} and q.asked == "int8"
    assert q.scheme == max(q.candidates, key=lambda s: (q.candidates[s], s == "int8_dynamic"))


def test_calibration_from_a_text_file_and_its_errors(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("def f(x):\n    return x + 1\n" * 20)
    cal = calibration_data(str(text), 5, 16, 300)
    assert cal.ids.shape == (5, 16) and cal.ids.max() < 256 and "notes.txt" in cal.source
    for source, vocab, code in ((str(tmp_path / "missing.txt"), 300, "ARC1107"), (str(text), 100, "ARC1107"),
                                ("chars", 100, "ARC1107")):
        with pytest.raises(QuantizeError) as e:
            calibration_data(source, 4, 16, vocab)
        assert e.value.code == code
    with pytest.raises(QuantizeError) as e:
        parse_keep(["fp32:routers"])
    assert e.value.code == "ARC1106" and "router" in e.value.hint


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archc", *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_quantized_export_explains_and_checks(decoder_export, tmp_path):
    _, root, _ = decoder_export
    out = _cli("export", str(root / "small.arch"), "--weights", str(root / "w.safetensors"), "-o",
               str(tmp_path / "x"), "--quantize", "int8_dynamic", "--keep", "fp32:ffn", "--explain", "--check")
    assert out.returncode == 0, out.stderr
    assert "quantized int8_dynamic:" in out.stdout and "in fp32: ffn\n" in out.stdout
    assert "layers.0.mlp.gate_up_proj.weight" in out.stdout and "kept fp32: --keep" in out.stdout  # O2: packed
    assert "parity (fp32 reference): onnxruntime equals" in out.stdout and "parity (int8_dynamic)" in out.stdout
    assert (tmp_path / "x" / "reference" / "model.onnx").is_file()
    for argv, status, code in (
        (["--quantize", "int8_static"], 1, "ARC1107"),
        (["--quantize", "int8", "--keep", "bf16:router"], 2, "ARC1106"),
        (["--keep", "fp32:router"], 2, "ARC1106"),
    ):
        r = _cli("export", str(root / "small.arch"), "-o", str(tmp_path / "y"), *argv)
        assert r.returncode == status and code in r.stderr and "Traceback" not in r.stderr, (argv, r.stderr)
    assert not (tmp_path / "y").exists()


def test_held_out_agreement_and_size_in_the_comparison(mamba_export, tmp_path):
    """`compress.compare`: a model against itself agrees everywhere with equal perplexity."""
    from archc.backends.onnx.compress import compare

    _, root = mamba_export
    ids = np.random.default_rng(0).integers(0, 300, (2, 24))
    c = compare(root / "fp32", root / "fp32", ids)
    assert c.top1 == 1.0 and c.ppl == pytest.approx(c.ppl_reference) and c.bytes == c.reference_bytes


def test_api_export_and_the_compress_report(decoder_export, tmp_path):
    """`archc.export_onnx(quantize=…)` from Python, then `archc compress-report` on the folder:
    one row for the fp32 reference and one for the quantized model, with size, latency,
    agreement and perplexity, and the per-class precision."""
    import json

    _, root, _ = decoder_export
    # standard operators: at --target ort the fp32 rotary tables (0.5 MB) outweigh this tiny
    # model's weights, and the size ratio would measure them (test_each_scheme_… does that)
    path = archc.export_onnx(str(root / "small.arch"), str(root / "w.safetensors"), str(tmp_path / "q"),
                             quantize="int8_dynamic", keep=["fp32:ffn"], target="onnx")
    assert path == tmp_path / "q" / "model.onnx" and (tmp_path / "q" / "reference" / "model.onnx").is_file()
    out = _cli("compress-report", str(tmp_path / "q"), "--data", "chars:4", "--seq", "32", "--json",
               str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [r["folder"] for r in rows] == [str(tmp_path / "q" / "reference"), str(tmp_path / "q")]
    assert rows[0]["top1"] == 1.0 and rows[0]["size_ratio"] == 1.0
    assert rows[1]["size_ratio"] < 0.8 and 0.8 < rows[1]["top1"] <= 1.0 and rows[1]["decode_ms"] > 0
    assert rows[1]["precision"] == "int8_dynamic: embedding int8, ffn fp32, projection int8"
    bad = _cli("compress-report", str(tmp_path / "nothing"))
    assert bad.returncode == 1 and "ARC1104" in bad.stderr
