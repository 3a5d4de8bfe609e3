from __future__ import annotations

from pathlib import Path

import pytest

from archc.docs_gen import errors_markdown, ops_markdown
from archc.ops import REGISTRY

ROOT = Path(__file__).resolve().parent.parent.parent


def test_every_op_is_used_by_some_spec():
    text = "\n".join(p.read_text() for p in (ROOT / "specs").glob("*.arch"))
    unused = [n for n, op in REGISTRY.items()
              if op.kind not in ("arith", "input") and not op.fuses and f"{n}(" not in text and n not in ("gelu", "silu", "relu", "sigmoid", "tanh",
                                                                          "alibi", "geglu", "groupnorm", "linear", "gru")]
    assert unused == []


def test_generated_docs_are_current():
    from archc.ops.registry import catalog_source

    assert (ROOT / "docs" / "ops.md").read_text() == ops_markdown(), "run `python -m archc.docs_gen`"
    assert (ROOT / "docs" / "errors.md").read_text() == errors_markdown(), "run `python -m archc.docs_gen`"
    assert (ROOT / "archc" / "ops" / "_catalog.py").read_text() == catalog_source(), "run `python -m archc.docs_gen`"


_LAZY_PROBE = """
import sys
import archc.ops._catalog as catalog
catalog.FAMILIES["mamba"] = (0, catalog.FAMILIES["mamba"][1])  # as if mamba.py changed since
del catalog.FAMILIES["rwkv"]                                    # as if rwkv.py were new
import archc
archc.loads("model m(t) { x = embed(t, 100, 32); return lm_head(rmsnorm(x)) }")
loaded = {m.rsplit(".", 1)[-1] for m in sys.modules if m.startswith("archc.ops.")}
print(sorted(loaded))
from archc.ops import REGISTRY
print("rwkv_time_mix" in REGISTRY, "mamba" in REGISTRY, len(REGISTRY))
"""


def test_lookup_imports_only_the_family_it_needs_and_a_stale_catalog_is_safe():
    """A spec imports the families it names; a family file the catalog does not know or whose
    checksum differs is imported up front, so no op goes missing."""
    import ast
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _LAZY_PROBE], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout.splitlines()
    loaded = set(ast.literal_eval(out[0]))
    assert {"embeddings", "heads", "norms", "mamba", "rwkv"} <= loaded
    assert not loaded & {"attention", "xlstm", "moe", "s4", "retention"}, loaded
    assert out[1] == f"True True {len(REGISTRY)}"


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
    from archc.ops.registry import family_files

    families = set(family_files())
    missing = [f for f in families if not (ROOT / "tests" / "ops" / f"test_{f}.py").exists()]
    assert missing == []
