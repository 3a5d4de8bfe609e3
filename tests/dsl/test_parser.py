from __future__ import annotations

import pytest

from archc.dsl import ast
from archc.dsl.parser import MAX_DEPTH, parse
from archc.errors import ArchError
from tests.conftest import SPECS


def _errors(text: str) -> list:
    with pytest.raises(ArchError) as e:
        parse(text, "t.arch")
    return e.value.diagnostics


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_spec_parses(path):
    m = parse(path.read_text(), str(path))
    assert any(isinstance(i, ast.ModelDef) for i in m.items)


def test_literals_keep_their_spelling_and_value():
    m = parse('model m(t) { a = 1e4; b = 80GB; c = 16GiB; d = 1_000; e = "s\\"q"; return t }')
    body = m.items[0].body
    vals = {s.name: s.value for s in body if isinstance(s, ast.Assign)}
    assert (vals["a"].value, vals["a"].text) == (10000.0, "1e4")
    assert vals["b"].bytes == 80 * 10**9 and vals["c"].bytes == 16 * 2**30
    assert vals["d"].value == 1000 and vals["e"].value == 's"q'


def test_precedence_and_nesting():
    m = parse("x = -2 ** 2 + 3 * 4 - 1")
    e = m.items[0].value
    assert isinstance(e, ast.BinOp) and e.op == "-"
    assert isinstance(e.left.left, ast.Neg) and e.left.left.operand.op == "**"


def test_comments_are_collected_with_positions():
    m = parse("# a\nx = 1  # b\n")
    assert [(c.line, c.col, c.text) for c in m.comments] == [(1, 1, "# a"), (2, 8, "# b")]


def test_unexpected_token_has_position_and_expected_set():
    (d,) = _errors("model m(t) {\n  x = attention(t heads=8)\n}\n")
    assert d.code == "ARC0103"
    assert (d.span.line, d.span.col) == (2, 19)
    assert "expected" in d.hint and "`)`" in d.hint and "`,`" in d.hint


def test_several_independent_syntax_errors_in_one_run():
    ds = _errors("model m(t) {\n  x = (1 +\n  y = 2 2\n  z = ]\n  return t\n}\n")
    assert len(ds) >= 2
    assert len({d.span.line for d in ds}) == len(ds)


def test_unexpected_character_hints():
    (d,) = _errors("x = 'a'")
    assert d.code == "ARC0101" and "double quotes" in d.hint
    (d,) = _errors("x = 1 // 2 // comment\ny = 1 / / 2")
    assert d.code == "ARC0103"


def test_unexpected_eof():
    (d,) = _errors("model m(t) {\n  x = 1\n")
    assert d.code == "ARC0102" and "`}`" in d.hint


def test_deep_nesting_is_a_diagnostic_not_a_crash():
    deep = "x = " + "f(" * (MAX_DEPTH + 5) + "1" + ")" * (MAX_DEPTH + 5)
    (d,) = _errors(deep)
    assert d.code == "ARC0104"
    very_deep = "x = " + "[" * 20000 + "]" * 20000
    (d,) = _errors(very_deep)
    assert d.code == "ARC0104"


def test_huge_file_is_refused():
    (d,) = _errors("# " + "x" * 3_000_000)
    assert d.code == "ARC0105"


@pytest.mark.parametrize("value", ['a\\nb', 'q"q', "l\nm", "\\", 'x\\"'])
def test_string_escapes_roundtrip_through_the_formatter(value):
    from archc.dsl.fmt import format_text

    out = format_text(parse(f"x = {ast_quote(value)}").items[0].value.value and f"x = {ast_quote(value)}")
    assert parse(out).items[0].value.value == value


def ast_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def test_parse_is_reentrant_across_threads():
    """The parser keeps no per-parse state in module globals: parses in other threads never mix
    their comments or spans into each other's."""
    import threading

    texts = {p.name: p.read_text() for p in SPECS[:6]}
    serial = {name: parse(t, name) for name, t in texts.items()}
    got: dict[str, list] = {name: [] for name in texts}

    def work(name: str) -> None:
        for _ in range(5):
            got[name].append(parse(texts[name], name))

    threads = [threading.Thread(target=work, args=(n,)) for n in texts for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, mods in got.items():
        assert all(m == serial[name] for m in mods), name
