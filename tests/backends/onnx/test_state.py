"""`--quantize-state int8`: a decoder's KV caches carried in int8 with one scale per row.

References: the torch module (the parity machinery, whose decode case reads the int8 cache back),
numpy's symmetric per-row quantization of the fp32 export's own cache (what ONNX's blocked
QuantizeLinear is specified to compute), and the fp32 export step for step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import archc
from archc.backends.onnx.compress import compare, quantize_folder
from archc.backends.onnx.export import QUANTIZED_TOLERANCE, check_parity, export_model
from archc.backends.onnx.precision import QuantizeError, QuantizeOptions
from archc.backends.onnx.runtime import OnnxModel
from archc.backends.onnx.state import cache_bytes_per_token
from archc.backends.torch import build

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def kv_int8(decoder_export, tmp_path_factory):
    model, root, _ = decoder_export
    folder = tmp_path_factory.mktemp("kv") / "kv"
    report = quantize_folder(folder, model.graph, QuantizeOptions("none", state="int8"), reference=root / "out")
    return model, root / "out", folder, report


def test_the_caches_are_int8_ports_with_a_scale_beside_each(kv_int8):
    _, ref, folder, report = kv_int8
    m = OnnxModel(folder).manifest
    caches = [s for s in m.state if s.kv]
    scales = {s.scale_of: s for s in m.state if s.scale_of}
    assert caches and all(s.dtype == "int8" for s in caches) and set(scales) == {s.input for s in caches}
    assert all(s.shape[-1] == 1 and s.dtype == "float32" for s in scales.values())
    inputs = {i.name: i.type.tensor_type.elem_type for i in onnx.load(folder / "model.onnx").graph.input}
    assert all(inputs[s.input] == onnx.TensorProto.INT8 for s in caches)
    assert report.quantization.scheme == "none" and report.quantization.state == "int8"
    assert not (folder / "genai_config.json").exists() and "int8" in m.genai
    # per token: one int8 per value and one fp32 scale per head row instead of four bytes a value
    head_dim = caches[0].shape[-1]
    assert cache_bytes_per_token(m) / cache_bytes_per_token(OnnxModel(ref).manifest) == pytest.approx(
        (head_dim + 4) / (4 * head_dim))


def test_the_cache_is_numpys_per_row_quantization_and_requantizing_it_is_exact(kv_int8):
    """After a prefill the int8 cache and scales are numpy's symmetric per-row quantization of the
    fp32 export's cache (round half to even, as ONNX specifies); a decode step returns the old
    rows unchanged, bit for bit — an error is made once, when a token enters the cache."""
    _, ref, folder, _ = kv_int8
    fp32, q8 = OnnxModel(ref), OnnxModel(folder)
    ids = np.random.default_rng(0).integers(0, fp32.vocab, (2, 12))
    _, ref_state = fp32.step(ids, 0, fp32.init_state(2))
    _, state = q8.step(ids, 0, q8.init_state(2))
    names = [s.input for s in q8.manifest.state]
    got = dict(zip(names, state, strict=True))
    want = dict(zip([s.input for s in fp32.manifest.state], ref_state, strict=True))
    for s in q8.manifest.state:
        if not s.kv:
            continue
        x = want[s.input]
        scale = np.maximum(np.abs(x).max(-1, keepdims=True) / np.float32(127), np.float32(1e-30))
        expect = np.clip(np.rint(x / scale), -127, 127).astype(np.int8)
        np.testing.assert_allclose(got[s.input + "_scale"], scale, rtol=1e-6)
        assert np.abs(got[s.input].astype(int) - expect).max() <= 1  # a tie may round the other way
        assert (got[s.input] != 0).mean() > 0.5
    _, after = q8.step(ids[:, :1], 12, state)
    for s, old, new in zip(q8.manifest.state, state, after, strict=True):
        if s.kv or s.scale_of:
            assert new.shape[2] == old.shape[2] + 1
            np.testing.assert_array_equal(new[:, :, :12], old)


def test_parity_and_agreement_through_the_int8_cache(kv_int8):
    """The parity machinery (its prefill + steps case decodes from the int8 cache) within the bound,
    and not exact (the cache is really int8); compare() decodes the second half through it."""
    model, ref, folder, _ = kv_int8
    rows = check_parity(model, folder, lengths=(17,), steps=16)
    assert all(r.ok for r in rows), rows
    steps = next(r for r in rows if "steps" in r.what)
    assert 1e-5 < steps.max_abs < QUANTIZED_TOLERANCE["none"]
    ids = np.random.default_rng(1).integers(0, 300, (4, 24))
    c = compare(ref, folder, ids)
    assert c.decoded_from == 12 and c.top1 > 0.9


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archc", *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_weights_and_state_together_and_the_refusals(decoder_export, tmp_path):
    _, root, _ = decoder_export
    out = _cli("export", str(root / "small.arch"), "--weights", str(root / "w.safetensors"), "-o",
               str(tmp_path / "x"), "--quantize", "int8_dynamic", "--quantize-state", "int8", "--explain")
    assert out.returncode == 0, out.stderr
    assert "KV caches in int8" in out.stdout and "quantized int8_dynamic:" in out.stdout
    assert "KV caches: int8, one fp32 scale per token and head" in out.stdout  # --explain says it too
    assert OnnxModel(tmp_path / "x").manifest.quantization.state == "int8"
    run = _cli("run", str(tmp_path / "x"), "--prompt", "ab", "--max-new-tokens", "4")
    assert run.returncode == 0, run.stderr
    for argv in (["--opset", "20"], ["--keep", "fp32:router"]):
        r = _cli("export", str(root / "small.arch"), "-o", str(tmp_path / "y"), "--quantize-state", "int8", *argv)
        assert r.returncode != 0 and ("ARC1109" if "--opset" in argv else "ARC1106") in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "y").exists()
    # the export section asks the same: `quantize_state = "int8"` at opset 20 is refused alike
    section = (root / "small.arch").read_text().rstrip().removesuffix("}")
    (tmp_path / "s.arch").write_text(section + '  export onnx {\n    opset = 20\n    quantize_state = "int8"\n  }\n}\n')
    r = _cli("export", str(tmp_path / "s.arch"), "-o", str(tmp_path / "z"))
    assert r.returncode != 0 and "ARC1109" in r.stderr and "opset 20" in r.stderr, r.stderr


WINDOW = """
model w(tokens) {
  block layer(x) {
    x = x + attention(rmsnorm(x), heads=4, kv_heads=2, causal=true, window=8, pos=rope())
    return x + swiglu(rmsnorm(x), hidden=64)
  }
  x = embed(tokens, 300, 32)
  x = repeat(2, layer)(x)
  return lm_head(rmsnorm(x), tied=true)
}
"""


def test_a_sliding_window_ring_buffer_is_requantized_without_drift(tmp_path):
    """A ring buffer (fixed slots) is requantized whole every step: every slot a step does not
    write keeps its int8 values and scale bit for bit — the claim that makes per-row scales
    exact under requantization — and the parity case decodes past the window within the bound."""
    import torch

    model = build(archc.loads(WINDOW, "w.arch").graph, seed=2).eval()
    with torch.no_grad():  # off the init, as the shared decoder
        gen = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    export_model(model, tmp_path / "q", WINDOW, "w", "random", quantize=QuantizeOptions("none", state="int8"))
    q8 = OnnxModel(tmp_path / "q")
    ring = [i for i, s in enumerate(q8.manifest.state) if s.kv or s.scale_of]
    assert ring and all(isinstance(q8.manifest.state[i].shape[2], int) for i in ring)  # fixed slots, no past_seq
    ids = np.random.default_rng(0).integers(0, 300, (2, 12))
    _, state = q8.step(ids, 0, q8.init_state(2))
    _, after = q8.step(ids[:, :1], 12, state)
    for i in ring:
        old, new = state[i], after[i]
        written = (old != new).any(-1)  # [batch, kv_heads, slots]: the slot this token went to
        assert written.sum(-1).max() <= 1 and written.any()
        np.testing.assert_array_equal(np.where(written[..., None], 0, new), np.where(written[..., None], 0, old))
    rows = check_parity(model, tmp_path / "q", lengths=(17,), steps=16)
    assert all(r.ok for r in rows), rows


RECURRENT = """
model r(tokens) {
  block layer(x) {
    return x + rwkv_time_mix(layernorm(x), version=4)
  }
  x = embed(tokens, 64, 16)
  return lm_head(repeat(1, layer)(x), tied=true)
}
"""


def test_a_decoder_without_a_kv_cache_is_refused(tmp_path):
    model = build(archc.loads(RECURRENT, "r.arch").graph, seed=0).eval()
    export_model(model, tmp_path / "fp32", RECURRENT, "r", "random")
    with pytest.raises(QuantizeError) as e:
        quantize_folder(tmp_path / "q", model.graph, QuantizeOptions("int8_dynamic", state="int8"),
                        reference=tmp_path / "fp32")
    assert e.value.code == "ARC1109" and "no KV cache" in e.value.message and "num" in e.value.message
    assert not (tmp_path / "q").exists()
