from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from archc.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archc", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "NO_COLOR": "1"}, check=False)


def test_check_clean_spec_is_silent():
    p = run("check", "specs/llama-tiny.arch")
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")


def test_check_warns_that_the_parallel_section_is_not_applied():
    """llama2-7b keeps a `parallel { }` section: validated, kept, but nothing applies it yet."""
    p = run("check", "specs/llama2-7b.arch")
    assert p.returncode == 0 and "ARC0502" in p.stderr and "specs/llama2-7b.arch:18:" in p.stderr, p.stderr
    assert run("check", "--strict", "specs/llama2-7b.arch").returncode != 0


def test_check_reports_diagnostics_with_caret_and_exit_1(tmp_path):
    bad = tmp_path / "broken.arch"
    bad.write_text("model m(tokens) {\n  x = embed(tokens, 100, 64)\n  return lm_head(attention(x, heads=5))\n}\n")
    p = run("check", str(bad))
    assert p.returncode == 1
    assert "Traceback" not in p.stderr
    assert "error[ARC0303]: attention: heads (5) does not divide the width (64)" in p.stderr
    assert f"--> {bad}:3:31" in p.stderr
    assert "3 |   return lm_head(attention(x, heads=5))" in p.stderr
    caret_line = next(line for line in p.stderr.splitlines() if "^" in line)
    assert caret_line.index("^") == p.stderr.splitlines()[p.stderr.splitlines().index(caret_line) - 1].index("heads")
    assert "help:" in p.stderr


def test_check_json_follows_terraform_validate(tmp_path):
    bad = tmp_path / "b.arch"
    bad.write_text("model m(t) {\n  return nope(t)\n}\n")
    p = run("check", "--format", "json", str(bad), "specs/gpt2.arch")
    assert p.returncode == 1
    j = json.loads(p.stdout)
    assert j["format_version"] == "1.0" and j["valid"] is False and j["error_count"] == 1
    d = j["diagnostics"][0]
    assert d["severity"] == "error" and d["code"] == "ARC0401"
    assert d["range"]["start"] == {"line": 2, "column": 10} and d["range"]["filename"] == str(bad)


def test_strict_fails_on_warnings(tmp_path):
    w = tmp_path / "w.arch"
    w.write_text("model m(t) {\n  x = embed(t, 10, 8)\n  y = rmsnorm(x)\n  return lm_head(x)\n}\n")
    assert run("check", str(w)).returncode == 0
    assert run("check", "--strict", str(w)).returncode == 1


def test_summary_table_and_json():
    p = run("summary", "specs/llama2-7b.arch", "--seq", "4096", "--batch", "1")
    assert p.returncode == 0 and "6,738,415,616" in p.stdout and "layers.0-31" in p.stdout
    j = json.loads(run("summary", "specs/mamba-130m.arch", "--json").stdout)
    assert j["total"]["params"] == 129_135_360


def test_fmt_check_and_write(tmp_path):
    assert run("fmt", "--check", *[str(p) for p in sorted((ROOT / "specs").glob("*.arch"))]).returncode == 0
    messy = tmp_path / "m.arch"
    messy.write_text("model m(t) { return lm_head(embed(t,10,8)) }\n")
    p = run("fmt", "--check", str(messy))
    assert p.returncode == 1 and "would reformat" in p.stderr
    assert messy.read_text() == "model m(t) { return lm_head(embed(t,10,8)) }\n"  # --check never writes
    assert run("fmt", str(messy)).stdout == "model m(t) {\n  return lm_head(embed(t, 10, 8))\n}\n"
    assert run("fmt", "-w", str(messy)).returncode == 0
    assert messy.read_text() == "model m(t) {\n  return lm_head(embed(t, 10, 8))\n}\n"


def test_graph_dot_has_block_clusters(tmp_path):
    out = tmp_path / "j.dot"
    assert run("graph", "specs/jamba-tiny.arch", "-o", str(out)).returncode == 0
    dot = out.read_text()
    assert "subgraph cluster_layers.3" in dot or 'subgraph "cluster_layers.3"' in dot
    assert "attn_moe" in dot


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")
def test_graph_svg(tmp_path):
    out = tmp_path / "j.svg"
    assert run("graph", "specs/jamba-tiny.arch", "-o", str(out)).returncode == 0
    assert out.read_text().lstrip().startswith("<?xml") and "<svg" in out.read_text()


def test_graph_svg_without_graphviz_is_a_diagnostic(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    rc = main(["graph", "specs/llama-tiny.arch", "-o", str(tmp_path / "x.svg")])
    err = capsys.readouterr().err
    assert rc == 1 and "ARC0801" in err and "apt install graphviz" in err
    assert not (tmp_path / "x.svg").exists()


def test_explain_and_ops():
    p = run("explain", "ARC0303")
    assert p.returncode == 0 and "kv_heads must divide heads" in p.stdout
    assert run("explain", "ARC1234").returncode == 2
    assert "mamba" in run("ops").stdout
    text = run("ops", "mamba").stdout
    assert re.search(r"d_state +int > 0 +default 16", text) and "e.g.  mamba(x)" in text
    assert "`d_state`" in run("ops", "mamba", "--markdown").stdout


def test_internal_errors_are_reported_not_raised(monkeypatch, capsys):
    import archc.cli.frontend

    def boom(args):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(archc.cli.frontend, "cmd_check", boom)
    rc = main(["check", "specs/gpt2.arch"])
    assert rc == 3 and "internal error[ARC9999]: RuntimeError: kaboom" in capsys.readouterr().err


def test_usage_errors_exit_2():
    assert run("check").returncode == 2
    assert run("frobnicate").returncode == 2


def test_missing_file_is_a_diagnostic():
    p = run("check", "nope.arch")
    assert p.returncode == 1 and "ARC0001" in p.stderr and "Traceback" not in p.stderr


def test_check_and_summary_never_import_torch():
    code = ("import sys; from archc.cli import main; main(['check', 'specs/mixtral-8x7b.arch']);"
            "main(['summary', 'specs/mixtral-8x7b.arch', '--json']);"
            "assert 'torch' not in sys.modules and 'networkx' not in sys.modules, 'heavy import'")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert p.returncode == 0, p.stderr


def test_a_ctrl_c_inside_string_code_still_exits_130_under_dash_m(tmp_path):
    """`python -m archc`: a KeyboardInterrupt that left code run from a string (every dataclass's
    methods are, and an export imports hundreds) marks CPython's interpreter, which then ended the
    process by SIGINT (exit −2) after archc had handled the interrupt and returned 130 — 3 of 24
    interrupted exports. Made deterministic: the command raises it inside a string `exec`."""
    (tmp_path / "interrupted_cli.py").write_text(
        "import sys\nimport archc.cli as cli\n"
        "cli.frontend.cmd_ops = lambda args: exec('raise KeyboardInterrupt', {})\n"
        "sys.exit(cli.main(['ops']))\n")
    p = subprocess.run([sys.executable, "-m", "interrupted_cli"], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "NO_COLOR": "1"}, check=False)
    assert (p.returncode, p.stderr) == (130, "archc: interrupted (SIGINT); nothing was left half-written\n")


def test_the_api_survives_the_commands_run_in_process(capsys):
    """Running a command in-process imports its modules; none may replace an API function (a
    submodule `archc.summary` once replaced `archc.summary()` the moment the CLI imported it)."""
    import archc

    assert main(["summary", "specs/llama-tiny.arch"]) == 0
    assert archc.summary("specs/llama-tiny.arch").total.params > 0
    assert all(callable(getattr(archc, name)) for name in archc.__all__ if name != "__version__")
