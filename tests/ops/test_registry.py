from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from archc.docs_gen import errors_markdown, ops_markdown
from archc.ops import REGISTRY

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_schema_rejects_unknown_keys_and_is_documented(name):
    op = REGISTRY[name]
    with pytest.raises(ValidationError) as info:
        op.params(definitely_not_a_parameter=1)
    # the unknown key itself is refused, not merely a required parameter found missing
    assert any(e["type"] == "extra_forbidden" and e["loc"] == ("definitely_not_a_parameter",)
               for e in info.value.errors())
    assert op.summary.endswith(".")
    assert op.cost.__doc__ or op.kind != "layer", f"{name}: cost rule needs a docstring stating its formula"


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
