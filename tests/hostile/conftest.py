"""Shared pieces of the hostile-input tests: a tiny decoder exported once, a snapshot of every
byte under a folder, and the CLI run as a user runs it (a subprocess) or in-process."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_lm_spec

ROOT = Path(__file__).resolve().parents[2]

#: a two-layer Llama-style decoder over bytes: small enough that an export takes a few seconds
SPEC = tiny_lm_spec(vocab=256, d=16, heads=2, hidden=32)


def cli(*args: str | bytes, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m archc ARGS` as a user runs it; stdout and stderr as text (bytes replaced)."""
    out = subprocess.run([sys.executable, "-m", "archc", *args], capture_output=True, cwd=cwd or ROOT,
                         timeout=timeout, env={**os.environ, "NO_COLOR": "1"})
    return subprocess.CompletedProcess(out.args, out.returncode, out.stdout.decode(errors="replace"),
                                       out.stderr.decode(errors="replace"))


def snapshot(root: Path, skip: Path | None = None) -> dict[str, str]:
    """Every entry under `root` (not following links) with a digest of its bytes, a link's
    target, or `dir`: two snapshots are equal when nothing under `root` changed."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        d = Path(dirpath)
        if skip is not None and (d == skip or skip in d.parents):
            dirs[:] = []
            continue
        for name in dirs + files:
            p = d / name
            rel = str(p.relative_to(root))
            if skip is not None and p == skip:
                continue
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_diagnostic(r: subprocess.CompletedProcess, status: int, code: str) -> None:
    """The documented exit status, the code, a help line, and never a traceback or ARC9999."""
    assert "Traceback" not in r.stderr and "ARC9999" not in r.stderr, r.stderr
    assert r.returncode == status, (r.returncode, r.stderr)
    assert code in r.stderr and "help:" in r.stderr, r.stderr


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """(spec path, weights path, an fp32 export folder) — made once, copied by each test."""
    from archc.backends.onnx.export import export_model
    from archc.backends.torch import build
    from archc.backends.torch.checkpoint import save_weights
    from archc.frontend import load

    root = tmp_path_factory.mktemp("tiny")
    spec = root / "tiny.arch"
    spec.write_text(SPEC)
    model = build(load(str(spec)).graph, seed=0)
    save_weights(model, root / "w.safetensors")
    export_model(model, root / "export", SPEC, "t", "w.safetensors")
    return spec, root / "w.safetensors", root / "export"


@pytest.fixture
def export_copy(tiny, tmp_path):
    """A fresh copy of the tiny export in this test's folder."""
    dst = tmp_path / "export"
    shutil.copytree(tiny[2], dst)
    return dst
