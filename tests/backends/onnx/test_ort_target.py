"""`archc export --target ort`: nodes whose math is one of onnxruntime's fused operators become that
operator, checked against the torch module (`check_parity`); the rest are traced, and the export
says which and why. `--target onnx` keeps to standard operators."""

from __future__ import annotations

import onnx
import pytest

import archc
from archc.backends.onnx.export import check_parity, export_model
from archc.backends.torch import build

#: GPT-2-style: LayerNorm, q/k/v and output biases, learned positions (no rotary in attention),
#: MHA with head_dim 16.
GPT = """
model gpt(tokens) {
  block layer(x) {
    x = x + attention(layernorm(x), heads=2, bias=true, causal=true)
    return x + mlp(layernorm(x), hidden=64)
  }
  x = learned_pos(embed(tokens, 200, 32), max_len=256)
  x = repeat(2, layer)(x)
  return lm_head(layernorm(x), tied=true)
}
"""

#: What GroupQueryAttention does not compute: a sliding window (archc's ring-buffer cache) and a
#: head_dim of 8 (its CPU kernel takes multiples of 16).
REFUSED = """
model odd(tokens) {
  x = embed(tokens, 200, 32)
  x = x + attention(rmsnorm(x), heads=2, kv_heads=1, causal=true, window=8, pos=rope())
  x = x + attention(rmsnorm(x), heads=4, causal=true, pos=rope())
  return lm_head(rmsnorm(x), tied=true)
}
"""


def _ops(path) -> set[tuple[str, str]]:
    m = onnx.load(path)
    out = set()

    def walk(g):
        for n in g.node:
            out.add((n.domain, n.op_type))
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)

    walk(m.graph)
    return out


def _export(text: str, folder, target: str = "ort"):
    model = build(archc.loads(text, "m.arch").graph, seed=2).eval()
    report = export_model(model, folder, text, "m", "random", target=target)
    return model, report


def test_a_gpt_style_decoder_becomes_onnxruntime_operators(tmp_path):
    model, report = _export(GPT, tmp_path / "ort")
    ops = _ops(tmp_path / "ort" / "model.onnx")
    assert {("com.microsoft", "GroupQueryAttention"), ("com.microsoft", "SkipLayerNormalization"),
            ("", "LayerNormalization")} <= ops and ("", "If") not in ops
    assert report.manifest.target == "ort" and not report.not_lowered
    assert sorted(set(report.lowered.values())) == ["GroupQueryAttention", "LayerNormalization",
                                                    "SkipLayerNormalization"]
    rows = check_parity(model, tmp_path / "ort", lengths=(1, 17), prefill=9, steps=6)
    assert all(r.ok for r in rows), rows


def test_what_the_operator_does_not_compute_is_traced_and_said(tmp_path):
    model, report = _export(REFUSED, tmp_path / "ort")
    attention = {k: v for k, v in report.not_lowered.items() if k.startswith("attn")}
    assert attention == {
        "attn": "a sliding window: archc keeps its cache as a ring buffer of the window, GroupQueryAttention a "
                "full-length one",
        "attn_1": "head_dim 8: onnxruntime's CPU GroupQueryAttention takes multiples of 16"}
    # and with the decoder's two forms kept, the fused norms stay traced too (the reason given)
    assert all("prefill/decode branches" in why for k, why in report.not_lowered.items() if k.startswith("norm"))
    assert ("", "If") in _ops(tmp_path / "ort" / "model.onnx")  # the traced caches keep two forms
    rows = check_parity(model, tmp_path / "ort", lengths=(1, 17), prefill=9, steps=6)
    assert all(r.ok for r in rows), rows


def test_the_onnx_target_keeps_to_standard_operators(tmp_path):
    _, report = _export(GPT, tmp_path / "std", target="onnx")
    assert report.manifest.target == "onnx" and set(report.lowered.values()) == {"LayerNormalization"}
    assert not any(domain for domain, _ in _ops(tmp_path / "std" / "model.onnx"))


def test_an_unknown_target_is_refused(tmp_path):
    from archc.backends.onnx import ExportError

    with pytest.raises(ExportError, match="unknown target `tensorrt`"):
        _export(GPT, tmp_path / "x", target="tensorrt")


def test_a_hybrid_keeps_its_attention_traced_inside_the_two_forms(tmp_path):
    """A recurrent layer keeps the decoder's prefill/decode `If`; inside it no contrib operator is
    used (measured: onnxruntime's static int8 quantizer then writes a graph it cannot load)."""
    text = """
model hybrid(tokens) {
  x = embed(tokens, 200, 32)
  x = x + mamba(rmsnorm(x), d_state=4)
  x = x + attention(rmsnorm(x), heads=2, causal=true, pos=rope())
  return lm_head(rmsnorm(x), tied=true)
}
"""
    model, report = _export(text, tmp_path / "h")
    assert "prefill/decode branches" in report.not_lowered["attn"]
    assert ("com.microsoft", "GroupQueryAttention") not in _ops(tmp_path / "h" / "model.onnx")
    assert all(r.ok for r in check_parity(model, tmp_path / "h", lengths=(9,), prefill=5, steps=3))
