"""Golden IR text: the lowering of a few specs, and a pipeline's output, pinned as the canonical
text form (`archc graph --format text`). After an intended change, rewrite the files with
`ARCHC_UPDATE_GOLDEN=1 pytest tests/frontend/test_golden.py` and review the diff."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import archc
from archc.passes.manager import run

ROOT = Path(__file__).resolve().parent.parent.parent
GOLDEN = ROOT / "tests" / "golden"

DEAD_BRANCH = """
model dead(tokens) {
  x = embed(tokens, 64, 16)
  side = mlp(x, hidden=8)
  x = x + attention(rmsnorm(x), heads=2, causal=true)
  return lm_head(x, tied=true)
}
"""


def _check(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("ARCHC_UPDATE_GOLDEN"):
        path.write_text(text + "\n")
    assert path.exists(), f"no golden file {path}; run with ARCHC_UPDATE_GOLDEN=1"
    assert text + "\n" == path.read_text(), f"{name}: the IR text changed; see the module docstring"


@pytest.mark.parametrize("spec", ["llama-tiny", "mixtral-tiny", "mamba2-tiny", "mod-tiny", "t5-small"])
def test_lowering_is_pinned(spec):
    _check(spec, archc.load(f"specs/{spec}.arch").graph.to_text())


def test_dead_code_elimination_is_pinned():
    g = archc.loads(DEAD_BRANCH, "dead.arch").graph
    _check("dead.clean", run(g, "clean").graph.to_text(annotations=True))
