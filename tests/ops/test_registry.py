from __future__ import annotations

from pathlib import Path

import pytest

from archc.docs_gen import errors_markdown, ops_markdown
from archc.ops import REGISTRY

ROOT = Path(__file__).resolve().parent.parent.parent


def test_every_op_is_used_by_some_spec():
    text = "\n".join(p.read_text() for p in (ROOT / "specs").glob("*.arch"))
    unused = [n for n, op in REGISTRY.items()
              if op.kind not in ("arith", "input") and f"{n}(" not in text and n not in ("gelu", "silu", "relu", "sigmoid", "tanh",
                                                                          "alibi", "geglu", "groupnorm", "linear", "gru")]
    assert unused == []


def test_generated_docs_are_current():
    assert (ROOT / "docs" / "ops.md").read_text() == ops_markdown(), "run `python -m archc.docs_gen`"
    assert (ROOT / "docs" / "errors.md").read_text() == errors_markdown(), "run `python -m archc.docs_gen`"


def test_every_emitted_code_is_explained():
    import re

    from archc.explain import EXPLANATIONS

    src = "\n".join(p.read_text() for p in (ROOT / "archc").rglob("*.py"))
    emitted = set(re.findall(r'"(ARC\d{4})"', src))
    assert emitted <= set(EXPLANATIONS), emitted - set(EXPLANATIONS)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_op_reference_speaks_the_language(name):
    """`archc ops NAME` shows types and defaults as a spec writes them, never Python's spelling."""
    from archc.docs_gen import _rows, op_text

    assert name in op_text(REGISTRY[name])
    for param, typ, default, _ in _rows(REGISTRY[name]):
        for python in ("typing", "NoneType", "Annotated", "Optional", "Literal", "True", "False", "None", "'",
                       "<class", "PositiveInt"):
            assert python not in typ + default, (name, param, typ, default)


def test_every_family_file_has_its_test_file():
    import pkgutil

    import archc.ops as front

    families = {m.name for m in pkgutil.iter_modules(front.__path__)} - {"registry"}
    missing = [f for f in families if not (ROOT / "tests" / "ops" / f"test_{f}.py").exists()]
    assert missing == []
