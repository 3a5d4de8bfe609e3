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
    # the unfused graph here; the default, O2, is exported and checked by test_quantize's CLI test
    out = _cli("export", str(root / "small.arch"), "--weights", str(root / "w.safetensors"), "-o", str(tmp_path / "x"),
               "--check", "--pipeline", "O0")
    assert out.returncode == 0, out.stderr
    assert "decoder of small (O0, --target ort)" in out.stdout and "parity (fp32): onnxruntime equals the torch module" in out.stdout
    assert out.stdout.count(" ok") == 5  # 3 lengths, the right-padded batch, prefill + steps
    assert '"pipeline": "O0"' in (tmp_path / "x" / "archc_export.json").read_text()


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


def test_an_op_that_fails_to_export_is_a_diagnostic_at_its_line(tmp_path, monkeypatch, capsys):
    """S4's complex-valued eager form put back in place of its exported form: torch.onnx fails on
    it, and `archc export` prints ARC1101 at the op's `.arch` line with a caret, no traceback."""
    from archc.backends.torch.ops.s4 import S4
    from archc.cli import main

    spec = tmp_path / "s.arch"
    spec.write_text("model s(tokens) {\n  x = embed(tokens, 64, 32)\n  x = x + s4(layernorm(x), d_state=8)\n"
                    "  return lm_head(layernorm(x))\n}\n")
    monkeypatch.setattr(S4, "exported_conv", S4._conv)
    assert main(["export", str(spec), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "ARC1101" in err and f"{spec}:3:" in err and "^" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
