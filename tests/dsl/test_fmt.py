from __future__ import annotations

import pytest

import archc
from archc.dsl.fmt import format_text
from tests.conftest import SPECS


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_specs_are_formatted_and_roundtrip(path):
    text = path.read_text()
    out = format_text(text, str(path))
    assert out == text, f"{path.name} is not in canonical form; run `archc fmt -w {path}`"
    assert format_text(out) == out
    g1 = archc.loads(text, str(path)).graph
    g2 = archc.loads(out, str(path)).graph
    assert g1.to_text() == g2.to_text()


MESSY = """# header
d = 256   # width
block dec(x, w=0) {  # hdr
  # leading
  x = x + attention(rmsnorm(x), heads=8, kv_heads=2, pos=rope(theta=1e4, scaling="ntk", factor=2.0), causal=true, window=4096)  # trailing
  y = -(2 + 3) * 4 ** -1 - (1 - 2)
  return x + swiglu(rmsnorm(x), hidden=688)
  # end of block
}
model m(tokens) { x = embed(tokens, 4096, d); x = repeat(4, dec)(x)
  return lm_head(rmsnorm(x), tied=true)
  export onnx { opset = 18; quantize = "int8" }
}
# end
"""


def test_format_is_idempotent_and_keeps_comments():
    out = format_text(MESSY)
    assert format_text(out) == out
    for c in ("# header", "# width", "# hdr", "# leading", "# trailing", "# end of block", "# end"):
        assert c in out
    assert "  x = embed(tokens, 4096, d)\n  x = repeat(4, dec)(x)\n" in out
    assert "    window=4096,\n  )  # trailing" in out
    assert "1e4" in out and "y = -(2 + 3) * 4 ** -1 - (1 - 2)" in out


def test_format_preserves_meaning():
    g1 = archc.loads(MESSY).graph
    g2 = archc.loads(format_text(MESSY)).graph
    assert g1.to_text() == g2.to_text()


@pytest.mark.parametrize("src", ["x = (a + b) * c", "x = a - (b - c)", "x = (a ** b) ** c", "x = a ** b ** c",
                                 "x = -(a + b)", "x = (-a) ** 2", "x = f(a)(b)(c=1)", "x = [1, [2, 3]]"])
def test_minimal_parentheses_roundtrip(src):
    from archc.dsl.parser import parse

    out = format_text(src)
    assert out.strip() == src
    assert parse(out).items == parse(src).items
