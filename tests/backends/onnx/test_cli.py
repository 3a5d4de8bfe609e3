"""`archc export` from the command line: the parity report, and every bad input a diagnostic with
a code and a hint, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archc", *args], capture_output=True, text=True, cwd=ROOT)


def test_export_check_reports_parity(decoder_export, tmp_path):
    _, root, _ = decoder_export
    out = _cli("export", str(root / "small.arch"), "--weights", str(root / "w.safetensors"), "-o", str(tmp_path / "x"),
               "--check")
    assert out.returncode == 0, out.stderr
    assert "decoder of small" in out.stdout and "parity: onnxruntime equals the torch module" in out.stdout
    assert out.stdout.count(" ok") == 5  # 3 lengths, the right-padded batch, prefill + steps


def test_bad_inputs_are_diagnostics(decoder_export, tmp_path):
    _, root, _ = decoder_export
    spec = str(root / "small.arch")
    other = tmp_path / "other.arch"
    other.write_text((root / "small.arch").read_text().replace("hidden=64", "hidden=48"))
    cases = [
        (["export", str(other), "--weights", str(root / "w.safetensors"), "-o", str(tmp_path / "a")], 1, "ARC0902"),
        (["export", spec, "-o", str(root / "out")], 1, "ARC0903"),
        (["export", spec, "-o", str(tmp_path / "b"), "--opset", "13"], 2, "ARC1103"),
        (["export", spec, "-o", "/proc/archc-cannot-write-here"], 1, "ARC1102"),
    ]
    for argv, status, code in cases:
        out = _cli(*argv)
        assert out.returncode == status and code in out.stderr, (argv, out.returncode, out.stderr)
        assert "Traceback" not in out.stderr and "help:" in out.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_an_op_that_does_not_export_yet_is_refused_at_its_line(tmp_path):
    out = _cli("export", "specs/s4-lm.arch", "-o", str(tmp_path / "s4"))
    assert out.returncode == 1 and "ARC1101" in out.stderr and "specs/s4-lm.arch:" in out.stderr
    assert "complex" in out.stderr and "^" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "s4").exists()
