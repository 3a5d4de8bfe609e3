"""Reading back an export folder as if a stranger had written it: every path the manifest (or the
model's external data) names stays inside the folder, the manifest is capped, UTF-8 and checked
against the graph, strings from it are shown escaped, and what decoding would allocate is bounded
— each refused with a diagnostic before anything is opened or allocated (`archc run` in-process:
it never imports torch and loads in a fraction of a second)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest

from archc.cli import main
from tests.hostile.conftest import snapshot


def _edit(folder: Path, fn) -> None:
    path = folder / "archc_export.json"
    m = json.loads(path.read_text())
    fn(m)
    path.write_text(json.dumps(m))


def _run(folder: Path, capsys, *extra: str) -> tuple[int, str]:
    status = main(["run", str(folder), "--prompt", "hi", "--max-new-tokens", "2", *extra])
    return status, capsys.readouterr().err


def _outside(tmp_path: Path) -> Path:
    victim = tmp_path / "outside.onnx"
    shutil.copyfile(Path(__file__), victim)
    return victim


@pytest.mark.parametrize("model", ["../outside.onnx", "/etc/passwd", "sub/../../outside.onnx", "..", "C:/x.onnx",
                                   "a\\..\\..\\outside.onnx"])
def test_the_manifests_model_path_cannot_leave_the_folder(export_copy, tmp_path, capsys, model):
    _outside(tmp_path)
    _edit(export_copy, lambda m: m.update(model=model))
    status, err = _run(export_copy, capsys)
    assert status == 1 and "ARC1304" in err and "help:" in err and "Traceback" not in err


def test_links_out_of_the_folder_are_not_followed(export_copy, tmp_path, capsys):
    victim = _outside(tmp_path)
    model = export_copy / "model.onnx"
    model.rename(tmp_path / "real.onnx")
    model.symlink_to(victim)
    status, err = _run(export_copy, capsys)
    assert status == 1 and "ARC1304" in err and "symbolic link" in err
    model.unlink()
    (tmp_path / "real.onnx").rename(model)
    assert _run(export_copy, capsys)[0] == 0  # the folder itself is fine: only the link was refused
    manifest = export_copy / "archc_export.json"
    manifest.rename(tmp_path / "real.json")
    manifest.symlink_to(tmp_path / "real.json")
    status, err = _run(export_copy, capsys)
    assert status == 1 and "ARC1304" in err and "symbolic link" in err


def test_external_data_outside_the_folder_is_refused_before_onnxruntime_opens_it(export_copy, tmp_path, capsys):
    proto = onnx.load(str(export_copy / "model.onnx"))
    onnx.external_data_helper.convert_model_to_external_data(proto, location="model.onnx.data", size_threshold=4096)
    onnx.save(proto, str(export_copy / "model.onnx"))
    assert _run(export_copy, capsys)[0] == 0  # inside the folder: fine
    proto = onnx.load(str(export_copy / "model.onnx"), load_external_data=False)
    (tmp_path / "stolen.data").write_bytes((export_copy / "model.onnx.data").read_bytes())
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../stolen.data"
    onnx.save(proto, str(export_copy / "model.onnx"))
    status, err = _run(export_copy, capsys)
    assert status == 1 and "ARC1304" in err and "stolen.data" in err


def test_compress_report_does_not_follow_the_reference_out(export_copy, tmp_path, capsys):
    shutil.copytree(export_copy, tmp_path / "elsewhere")
    _edit(export_copy, lambda m: m.update(quantization={"scheme": "none", "asked": "none", "tool": "t",
                                                         "reference": "../elsewhere"}))
    status = main(["compress-report", str(export_copy), "--no-timing", "--data", "chars:2", "--seq", "8"])
    err = capsys.readouterr().err
    assert status == 1 and "ARC1304" in err and "quantization.reference" in err


@pytest.mark.parametrize("case", ["not-utf8", "too-large", "not-json", "bad-symbol", "negative-dim"])
def test_a_damaged_manifest_is_arc1104(export_copy, capsys, case):
    path = export_copy / "archc_export.json"
    if case == "not-utf8":
        path.write_bytes(path.read_bytes()[:40] + b"\xff\xfe" + path.read_bytes()[40:])
    elif case == "too-large":
        with open(path, "r+b") as f:
            f.truncate(100 * 2**20)  # sparse: costs no disk
    elif case == "not-json":
        path.write_text('{"format": ')
    elif case == "bad-symbol":
        _edit(export_copy, lambda m: m["state"][0].update(shape=["batch", "heads", "past_seq", 8]))
    else:
        _edit(export_copy, lambda m: m["state"][0].update(shape=["batch", -1, "past_seq", 8]))
    status, err = _run(export_copy, capsys)
    assert status == 1 and "ARC1104" in err and "Traceback" not in err
    if case == "not-utf8":
        assert "byte 40" in err
    if case == "too-large":
        assert "104,857,600 bytes" in err


@pytest.mark.parametrize("case", ["state-long", "vocab", "dtype", "fill", "port-name", "state-port"])
def test_a_manifest_that_disagrees_with_the_graph_is_arc1305(export_copy, capsys, case):
    def edit(m):
        if case == "state-long":  # a state 10^7 long: allocated until the kernel killed archc
            for s in m["state"]:
                s["shape"][1] = 10**7
            for p in m["inputs"]:
                if p["name"].startswith("past_key_values"):
                    p["shape"][1] = 10**7
        elif case == "vocab":
            m["vocab"] = 1000
        elif case == "dtype":
            m["inputs"][0]["dtype"] = "float32"
        elif case == "fill":
            m["state"][0]["fill"] = [[1.0, 2.0]]
        elif case == "port-name":
            m["outputs"][0]["name"] = "logits_x"
        else:
            m["state"][0]["shape"] = ["batch", 1, "past_seq", 9]

    _edit(export_copy, edit)
    status, err = _run(export_copy, capsys)
    assert status == 1 and "ARC1305" in err and "help:" in err and "Traceback" not in err


def test_strings_from_a_manifest_are_shown_escaped(export_copy, capsys):
    _edit(export_copy, lambda m: m.update(spec="evil\x1b[2J\nforged line\u202e"))
    assert main(["run", str(export_copy), "--benchmark", "--max-new-tokens", "2", "--bench-prompt", "4"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out and "evil\\x1b[2J\\nforged line\\u202e" in out


def test_decoding_beyond_max_memory_is_refused_with_the_figure(export_copy, capsys):
    status, err = _run(export_copy, capsys, "--max-memory", "1MB", "--max-new-tokens", "100000")
    assert status == 1 and "ARC1306" in err and "GB" in err
    status, err = _run(export_copy, capsys, "--top-k", "257")
    assert status == 2 and "ARC1307" in err and "--top-k" in err
    status = main(["run", str(export_copy), "--benchmark", "--max-new-tokens", "0"])
    assert status == 2 and "ARC1307" in capsys.readouterr().err


def test_a_reader_changes_nothing(export_copy, tmp_path, capsys):
    before = snapshot(tmp_path)
    assert _run(export_copy, capsys)[0] == 0
    assert snapshot(tmp_path) == before
