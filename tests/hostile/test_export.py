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
    """What is in the system temp dir besides what libraries write whatever the command:
    onnxruntime's 51-byte session id (`.ses`), lark's grammar cache (a few kB, one per grammar) and
    torch's inductor cache folder, made empty when torch.export starts."""
    return [n for n in os.listdir(systmp) if n != ".ses" and not n.startswith(".lark_cache")
            and not (n.startswith("torchinductor_") and not os.listdir(systmp / n))]


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
    else:  # the new export, complete: it finished before the signal, or the signal met the swap
        # (held until the renames were done, then delivered: exit 130 with the new export whole)
        assert p.returncode in (0, 130) or sig == signal.SIGKILL, note
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
    spec.write_text(tiny[0].read_text().replace("model t(tokens) {", "model t(tokens) {\n"
                                                "  export onnx {\n    quantize = \"int8\"\n  }"))
    assert main(["export", str(spec), "-o", str(tmp_path / "o"), "--quantize", "none"]) == 0
    assert read_manifest(tmp_path / "o").quantization is None
    assert not (tmp_path / "o" / "reference").exists()


def test_export_onto_a_full_disk_is_arc1102_with_the_bytes_and_keeps_the_old_export(tiny, tmp_path):
    """A real full file system (a tmpfs in a user namespace) holding an old export and a file of
    the user's: the export is refused before it writes, with the bytes it needs, and nothing on the
    disk changes."""
    import json
    import textwrap

    from tests.hostile.test_output import _can_mount_tmpfs

    reason = _can_mount_tmpfs()
    if reason:
        pytest.skip(f"cannot make a full disk: {reason}")
    spec, _, old = tiny
    disk = tmp_path / "disk"
    disk.mkdir()
    script = textwrap.dedent(f"""
        import json, os, shutil, subprocess, sys
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", {str(disk)!r}], check=True)
        out = os.path.join({str(disk)!r}, "out")
        shutil.copytree({str(old)!r}, out)
        open(os.path.join(out, "notes.txt"), "w").write("the user's")
        before = {{n: open(os.path.join(out, n), "rb").read().hex()[:64] for n in os.listdir(out)}}
        r = subprocess.run([sys.executable, "-m", "archc", "export", {str(spec)!r}, "-o", out, "--force"],
                           capture_output=True, text=True)
        after = {{n: open(os.path.join(out, n), "rb").read().hex()[:64] for n in os.listdir(out)}}
        print(json.dumps({{"status": r.returncode, "err": r.stderr, "same": before == after,
                          "disk": os.listdir({str(disk)!r})}}))
    """)
    r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-c", script],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["status"] == 1 and "ARC1102" in got["err"] and "MB needed" in got["err"], got["err"]
    assert "Traceback" not in got["err"] and got["same"] and got["disk"] == ["out"]
