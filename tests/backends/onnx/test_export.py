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
from archc.backends.onnx.export import check_parity, export_model
from archc.backends.torch import build


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
    # what else is there are the traced code's folded constants, not copies of weights
    assert keys <= set(inits) and "lm_head.weight" not in inits
    weight_bytes = sum(len(inits[k].raw_data) for k in keys)
    other_bytes = sum(len(i.raw_data) + 4 * len(i.float_data) + 8 * len(i.int64_data)
                      for n, i in inits.items() if n not in keys)
    assert other_bytes < 0.01 * weight_bytes
    manifest = json.loads((root / "out" / "archc_export.json").read_text())
    assert manifest["kind"] == "decoder" and manifest["vocab"] == 300
    assert manifest["state"][0] == {"input": "past_key_values.0.key", "output": "present.0.key", "node": "layers.0.attn",
                                    "state": "key", "dtype": "float32", "shape": ["batch", 2, "past_seq", 8], "fill": 0.0}
    assert report.units == 6  # embed, rmsnorm, attention (prefill and decode forms), swiglu, lm_head


def test_layers_share_one_exported_graph(decoder_export):
    """Two identical layers cost one export of each distinct node: the unit count does not grow
    with depth."""
    _, _, report = decoder_export
    deeper = archc.loads(archc_spec_with_layers(4), "deep.arch").graph
    model = build(deeper, seed=0).eval()
    from archc.backends.onnx.assemble import Assembler

    assert Assembler(model, 20).decoder().units == report.units


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
    """Mamba: the prefill branch runs the chunked scan, one-token steps the recurrence; both
    equal the torch forward, and the state is `conv_state` / `recurrent_state` per layer."""
    model = build(archc.loads(RECURRENT, "rec.arch").graph, seed=0).eval()
    report = export_model(model, tmp_path / "out", RECURRENT, "rec", "random")
    names = [s.input for s in report.manifest.state]
    assert names == ["past_key_values.0.conv_state", "past_key_values.0.recurrent_state",
                     "past_key_values.1.conv_state", "past_key_values.1.recurrent_state"]
    rows = check_parity(model, tmp_path / "out", lengths=(1, 40), prefill=24, steps=8, atol=1e-5)
    assert all(r.ok for r in rows), rows
    graph = onnx.load(tmp_path / "out" / "model.onnx").graph
    assert [n.op_type for n in graph.node][-1] == "If"


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
        np.testing.assert_allclose(got[real], ref[real], atol=1e-5, rtol=1e-5)


def test_export_is_reproducible(decoder_export, tmp_path):
    model, root, _ = decoder_export
    from tests.backends.onnx.conftest import DECODER

    export_model(model, tmp_path / "again", DECODER, "small", "w.safetensors")
    assert (tmp_path / "again" / "model.onnx").read_bytes() == (root / "out" / "model.onnx").read_bytes()


@pytest.mark.parametrize("case", ["exists", "force-keeps-foreign-files"])
def test_existing_folder_is_refused_unless_forced(decoder_export, tmp_path, case):
    from archc.backends.onnx.export import ExportError
    from tests.backends.onnx.conftest import DECODER

    model = decoder_export[0]
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    if case == "exists":
        with pytest.raises(ExportError, match="refusing to overwrite"):
            export_model(model, out, DECODER, "small", "w")
        return
    export_model(model, out, DECODER, "small", "w", force=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "model.onnx").exists()
