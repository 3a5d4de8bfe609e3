"""No input makes archc crash: every outcome is a clean result or diagnostics (ArchError).

Three sources of inputs: strings the grammar generates (hypothesis' `from_lark`), random mutations
of the real specs (which also reach the semantic checks), and pathological shapes (deep nesting,
long lines, binary junk).
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark
from lark import Lark

import archc
from archc.dsl.parser import GRAMMAR_PATH
from archc.errors import ArchError
from tests.conftest import SPECS

SPEC_TEXTS = [p.read_text() for p in SPECS]
FUZZ = settings(max_examples=1200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def _check_only_diagnostics(text: str, tmp: Path | None = None) -> None:
    try:
        prog = archc.loads(text, str(tmp / "fuzz.arch") if tmp else "fuzz.arch", max_nodes=20_000)
    except ArchError as e:
        assert e.diagnostics, "an ArchError must carry diagnostics"
        for d in e.diagnostics:
            assert d.code.startswith("ARC") and d.message
        return
    archc.fmt(text)  # a spec that checks also formats
    assert prog.graph.outputs


@FUZZ
@given(from_lark(Lark(GRAMMAR_PATH.read_text(), parser="lalr"), start="start"))
def test_grammar_generated_inputs(text):
    _check_only_diagnostics(text)


_TOKENS = ["(", ")", "{", "}", ",", "=", "+", "*", "-", "/", "**", "//", "[", "]", "\n", '"', "#", "0", "1e309",
           "99999999999999999999999", "x", "model", "block", "return", "repeat", "pattern", "include", "heads=",
           "true", "none", "80GB", ";", "\x00", "é", "\\"]


@st.composite
def mutated_spec(draw):
    text = draw(st.sampled_from(SPEC_TEXTS))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "insert", "replace", "duplicate", "swap_lines"]))
        i = draw(st.integers(0, len(text)))
        if kind == "delete":
            j = draw(st.integers(i, min(len(text), i + 20)))
            text = text[:i] + text[j:]
        elif kind == "insert":
            text = text[:i] + draw(st.sampled_from(_TOKENS)) + text[i:]
        elif kind == "replace":
            text = text[:i] + draw(st.sampled_from(_TOKENS)) + text[i + 1:]
        elif kind == "duplicate":
            j = draw(st.integers(i, min(len(text), i + 80)))
            text = text[:j] + text[i:j] + text[j:]
        else:
            lines = text.splitlines()
            a, b = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
    return text


@FUZZ
@given(mutated_spec())
def test_mutated_specs(text):
    _check_only_diagnostics(text)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(max_size=300))
def test_arbitrary_text(text):
    _check_only_diagnostics(text)


@settings(max_examples=50, deadline=None, derandomize=True)
@given(st.integers(1, 5000), st.sampled_from(["(", "[", "f(", "-", "x + ("]))
def test_deep_nesting(depth, opener):
    closer = {"(": ")", "[": "]", "f(": ")", "-": "", "x + (": ")"}[opener]
    _check_only_diagnostics("model m(t) {\n  y = " + opener * depth + "1" + closer * depth + "\n  return t\n}\n")


def test_long_line_and_many_statements():
    _check_only_diagnostics("model m(t) {\n" + "".join(f"  a{i} = {i}\n" for i in range(20000)) + "  return t\n}\n")
    _check_only_diagnostics("x = " + " + ".join(["1"] * 50000))
