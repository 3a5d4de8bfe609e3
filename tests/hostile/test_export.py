"""`archc export --force` over a good export, interrupted as users interrupt it: SIGINT and SIGKILL
at random points of a real export (a subprocess, as a user runs it). At every instant the folder
holds the old export or the new one, whole; the user's files beside it are untouched; nothing is
left in the system temp dir; and the next run is not blocked. The random points are printed on
failure (a seeded draw, different per run)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from archc.cli import main
from tests.hostile.conftest import ROOT, assert_diagnostic, cli, snapshot


def _start_export(spec: Path, out: Path, systmp: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": str(systmp), "NO_COLOR": "1"}
    return subprocess.Popen([sys.executable, "-m", "archc", "export", str(spec), "-o", str(out), "--force",
                             "--seed", "1", *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _archc_files(systmp: Path) -> list[str]:
    """What is in the system temp dir besides what libraries write on import whatever the command:
    onnxruntime's 51-byte session id (`.ses`) and lark's grammar cache (a few kB, one per grammar)."""
    return [n for n in os.listdir(systmp) if n != ".ses" and not n.startswith(".lark_cache")]


def _loads(folder: Path) -> str:
    """The manifest's `weights` of a folder `archc run` loads and decodes from (raises otherwise)."""
    import numpy as np

    from archc.backends.onnx.runtime import OnnxModel

    m = OnnxModel(folder)
    m.generate(np.array([[10]]), max_new_tokens=2)
    return m.manifest.weights


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_an_interrupted_force_export_leaves_the_old_or_the_new_export(tiny, export_copy, tmp_path, sig):
    spec, _, _ = tiny
    (export_copy / "notes.txt").write_text("the user's")
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    old = snapshot(export_copy)
    when = random.Random().uniform(1.0, 6.0)
    extra = ("--quantize", "int8") if sig == signal.SIGKILL else ()  # the kill also meets reference/ and scratch
    p = _start_export(spec, export_copy, systmp, *extra)
    time.sleep(when)
    p.send_signal(sig)
    _, err = p.communicate(timeout=300)
    note = f"{sig.name} after {when:.2f} s (exit {p.returncode}): {err.decode(errors='replace')[-500:]}"
    assert b"Traceback" not in err, note
    assert _archc_files(systmp) == [], note  # the system temp dir was not used
    leftovers = [n for n in os.listdir(export_copy) if n.startswith(".archc-txn-")]
    now = snapshot(export_copy, skip=export_copy / leftovers[0] if leftovers else None)
    assert (export_copy / "notes.txt").read_text() == "the user's", note
    if now == old:
        assert _loads(export_copy) == "w.safetensors", note
    else:  # the new export, complete (it finished before the signal)
        assert p.returncode in (0, None) or sig == signal.SIGKILL, note
        assert _loads(export_copy).startswith("random init, seed 1"), note
    if sig == signal.SIGINT:
        assert p.returncode in (0, 130) and not leftovers, note
        return
    # after a kill: the next export is not blocked, and cleans up what the dead one left
    again = cli("export", str(spec), "-o", str(export_copy), "--force", "--seed", "2")
    assert again.returncode == 0, (note, again.stderr)
    assert _loads(export_copy) == "random init, seed 2"
    assert not [n for n in os.listdir(export_copy) if n.startswith(".archc-txn-")]
    assert (export_copy / "notes.txt").read_text() == "the user's"


def test_force_keeps_the_users_files_in_reference_and_an_empty_o_is_refused(tiny, tmp_path, monkeypatch, capsys):
    spec, weights, _ = tiny
    out = tmp_path / "q"
    assert main(["export", str(spec), "--weights", str(weights), "-o", str(out), "--quantize", "int8"]) == 0
    (out / "reference" / "mine.txt").write_text("the user's")
    (out / "reference" / "deeper").mkdir()
    assert main(["export", str(spec), "--weights", str(weights), "-o", str(out), "--force"]) == 0  # now fp32
    assert sorted(os.listdir(out / "reference")) == ["deeper", "mine.txt"]  # archc's reference files went
    assert "ARC0903" not in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.onnx").write_text("the user's")
    r = cli("export", str(spec), "-o", "", "--force", cwd=tmp_path)
    assert_diagnostic(r, 2, "ARC1307")
    assert (tmp_path / "model.onnx").read_text() == "the user's"


def test_a_spec_section_asking_for_int8_is_overridden_by_quantize_none(tiny, tmp_path):
    from archc.backends.onnx.manifest import read_manifest

    spec = tmp_path / "q.arch"
    spec.write_text(tiny[0].read_text().replace("model tiny(tokens) {", "model tiny(tokens) {\n"
                                                "  export onnx {\n    quantize = \"int8\"\n  }"))
    assert main(["export", str(spec), "-o", str(tmp_path / "o"), "--quantize", "none"]) == 0
    assert read_manifest(tmp_path / "o").quantization is None
    assert not (tmp_path / "o" / "reference").exists()
