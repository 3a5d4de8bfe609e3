"""`archc run` and `OnnxModel`: numpy and onnxruntime only; greedy output equal to `archc
generate` on the same weights; the sampling warpers equal the torch backend's; bad folders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[3]

_NO_TORCH = """
import sys
import numpy as np
from archc.backends.onnx.runtime import OnnxModel
m = OnnxModel(sys.argv[1])
out = m.generate(np.array([[1, 2, 3]]), max_new_tokens=5, temperature=0.7, top_k=20, top_p=0.9, seed=0)
assert out.shape == (1, 8), out.shape
print("torch" in sys.modules)
"""


def test_runtime_never_imports_torch(decoder_export):
    _, root, _ = decoder_export
    out = subprocess.run([sys.executable, "-c", _NO_TORCH, str(root / "out")], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archc", *args], capture_output=True, text=True, cwd=ROOT)


def test_archc_run_greedy_equals_archc_generate(decoder_export):
    _, root, _ = decoder_export
    prompt = "5 17 250 3"
    run = _cli("run", str(root / "out"), "--prompt-ids", prompt, "--max-new-tokens", "24")
    gen = _cli("generate", str(root / "small.arch"), "--weights", str(root / "w.safetensors"),
               "--prompt-ids", prompt, "--max-new-tokens", "24")
    assert run.returncode == 0 and gen.returncode == 0, run.stderr + gen.stderr
    assert run.stdout.split() == gen.stdout.split()
    assert len(run.stdout.split()) == 4 + 24


def test_byte_prompts_and_the_stop_token(decoder_export):
    _, root, _ = decoder_export
    free = _cli("run", str(root / "out"), "--prompt", "ab", "--max-new-tokens", "8")
    assert free.returncode == 0 and free.stdout.startswith("ab")
    ids = _cli("run", str(root / "out"), "--prompt-ids", "97 98", "--max-new-tokens", "8").stdout.split()
    stop = int(ids[2])  # the first generated token: nothing after the prompt is printed
    stopped = _cli("run", str(root / "out"), "--prompt-ids", "97 98", "--max-new-tokens", "8", "--stop-token", str(stop))
    assert stopped.stdout.split() == ids[:2]


def test_benchmark_prints_throughput(decoder_export):
    _, root, _ = decoder_export
    out = _cli("run", str(root / "out"), "--benchmark", "--bench-prompt", "16", "--max-new-tokens", "4", "--threads", "1")
    assert out.returncode == 0 and "tokens/s" in out.stdout and "ms/token" in out.stdout


@pytest.mark.parametrize("top_k, top_p", [(None, None), (5, None), (None, 0.7), (8, 0.5), (1, 0.99)])
def test_warpers_equal_the_torch_backends(top_k, top_p):
    from archc.backends.onnx.runtime import warp as np_warp
    from archc.backends.torch.generate import warp as torch_warp

    logits = torch.randn(4, 50) * 3
    want = torch_warp(logits, 0.8, top_k, top_p).numpy()
    got = np_warp(logits.numpy(), 0.8, top_k, top_p)
    assert np.array_equal(np.isinf(got), np.isinf(want))
    np.testing.assert_allclose(got[np.isfinite(got)], want[np.isfinite(want)], rtol=1e-6)


def test_a_folder_that_is_not_an_export_is_a_diagnostic(tmp_path, decoder_export):
    out = _cli("run", str(tmp_path))
    assert out.returncode == 1 and "ARC1104" in out.stderr and "archc_export.json" in out.stderr
    _, root, _ = decoder_export
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.onnx").write_bytes((root / "out" / "model.onnx").read_bytes())
    manifest = json.loads((root / "out" / "archc_export.json").read_text())
    manifest["state"] = manifest["state"][:1]
    manifest["inputs"] = manifest["inputs"][:3]
    (broken / "archc_export.json").write_text(json.dumps(manifest))
    out = _cli("run", str(broken))
    assert out.returncode == 1 and "ARC1305" in out.stderr and "disagree" in out.stderr
    assert "Traceback" not in out.stderr


def test_onnxruntime_genai_generates_what_archc_run_does(decoder_export):
    """onnxruntime-genai from PyPI loads the folder by its genai_config.json and greedy-decodes the
    same tokens as `archc run` (token ids in, token ids out)."""
    og = pytest.importorskip("onnxruntime_genai")
    from archc.backends.onnx.runtime import OnnxModel

    _, root, report = decoder_export
    assert (root / "out" / "genai_config.json").exists() and report.manifest.genai.startswith("onnxruntime-genai runs it")
    prompt = np.array([[5, 17, 250, 3, 99]])
    vocab = report.manifest.vocab
    ours = OnnxModel(root / "out").generate(prompt, max_new_tokens=20, eos_token_id=vocab - 1)[0].tolist()
    theirs = _genai_greedy(og, root / "out", prompt, 20)
    assert theirs == ours[:len(theirs)] and (len(theirs) == len(ours) or theirs[-1] == vocab - 1)
    assert len(set(ours[5:])) > 2  # the model's continuation is not a constant


def _genai_greedy(og, folder: Path, prompt: np.ndarray, new: int) -> list[int]:
    """onnxruntime-genai's greedy continuation of `prompt` [1, T] (it stops early at the
    config's end-of-sequence id, the vocabulary's last)."""
    params = og.GeneratorParams(model := og.Model(str(folder)))
    params.set_search_options(max_length=prompt.shape[1] + new, do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(prompt.astype(np.int32))
    while not gen.is_done():
        gen.generate_next_token()
    return [int(t) for t in gen.get_sequence(0)]


def test_last_position_logits_generate_the_same_tokens_in_archc_run_and_genai(decoder_export, tmp_path, capsys):
    """`archc export --logits last`: the head reads the last position only (one Slice before it,
    as onnxruntime-genai's `prune_lm_head`); its logits equal the full export's last row, the
    parity check holds at the last positions, onnxruntime-genai and `archc run` generate what the
    full export does, and compress-report, which scores every position, refuses it by name."""
    og = pytest.importorskip("onnxruntime_genai")
    from archc.backends.onnx.export import check_parity, export_model
    from archc.backends.onnx.runtime import OnnxModel
    from archc.cli import main
    from tests.backends.onnx.conftest import DECODER

    model, root, _ = decoder_export
    report = export_model(model, tmp_path / "last", DECODER, "small", "w.safetensors", logits="last")
    assert report.manifest.logits == "last"
    assert [o.shape for o in report.manifest.outputs if o.name == "logits"] == [["batch", 1, 300]]
    prompt = np.array([[5, 17, 250, 3, 99, 42, 7]])
    full, last = OnnxModel(root / "out"), OnnxModel(tmp_path / "last")
    np.testing.assert_allclose(last.logits(prompt), full.logits(prompt)[:, -1:], atol=1e-5)
    rows = check_parity(model, tmp_path / "last", lengths=(1, 17), prefill=8, steps=4)
    assert all(r.ok for r in rows) and not any("right-padded" in r.what for r in rows), rows
    ours = full.generate(prompt, max_new_tokens=12, eos_token_id=299)[0].tolist()
    assert last.generate(prompt, max_new_tokens=12, eos_token_id=299)[0].tolist() == ours
    theirs = _genai_greedy(og, tmp_path / "last", prompt, 12)
    assert theirs == ours[:len(theirs)] and (len(theirs) == len(ours) or theirs[-1] == 299)
    assert main(["compress-report", str(tmp_path / "last"), "--no-timing"]) == 1
    assert "error[ARC0906]" in capsys.readouterr().err


def test_last_position_logits_are_refused_for_a_forward_graph(tmp_path):
    import archc
    from archc.backends.onnx import ExportError
    from archc.backends.onnx.export import export_model
    from archc.backends.torch import build

    # bidirectional attention: a forward graph, whose every position's logits are its output
    text = ("model enc(tokens) {\n  x = embed(tokens, 50, 16)\n  x = x + attention(x, heads=2, causal=false)\n"
            "  return lm_head(rmsnorm(x))\n}\n")
    model = build(archc.loads(text, "enc.arch").graph, seed=0).eval()
    with pytest.raises(ExportError, match="--logits last") as e:
        export_model(model, tmp_path / "out", text, "enc", "random", logits="last")
    assert e.value.code == "ARC1101" and not (tmp_path / "out").exists()
    (tmp_path / "enc.arch").write_text(text)  # the same refusal through the API's export
    with pytest.raises(ExportError, match="--logits last"):
        archc.export_onnx(str(tmp_path / "enc.arch"), out=str(tmp_path / "out"), logits="last")


def test_recurrent_exports_say_why_genai_cannot_run_them(tmp_path):
    from archc.backends.onnx.genai import genai_support
    from archc.backends.onnx.manifest import Manifest, StateInfo

    m = Manifest(kind="decoder", spec="m", spec_sha256="0", opset=20, vocab=10, inputs=[], outputs=[], weights="w",
                 state=[StateInfo(input="past_key_values.0.conv_state", output="present.0.conv_state", node="n",
                                  state="conv", dtype="float32", shape=["batch", 8, 4], fill=0.0)])
    ok, why = genai_support(m)
    assert not ok and "recurrent state" in why and "archc run" in why
