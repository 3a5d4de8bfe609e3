"""Spec edits that keep the rest of the file as written (`archc prune`'s rewrite)."""

from __future__ import annotations

from archc.dsl.edit import set_call_params, set_repeat_count
from archc.dsl.fmt import format_module
from archc.dsl.parser import parse

SPEC = """model m(tokens) {
  ffn = 64  # the FFN width
  block layer(x) {
    x = x + attention(rmsnorm(x), 4, causal=true)
    return x + moe(rmsnorm(x), experts=4, expert=swiglu(hidden=ffn))
  }
  x = embed(tokens, 300, 32)
  x = repeat(2, layer)(x)
  return lm_head(rmsnorm(x))
}
"""


def _positional(op: str) -> list[str]:
    return {"attention": ["x", "heads", "head_dim"], "moe": ["x", "experts"], "swiglu": ["x", "hidden"]}.get(op, [])


def test_settings_are_replaced_in_place_added_and_edited_inside_op_specs():
    module = parse(SPEC, "m.arch")
    edits = {("m.arch", 4, 13): {"heads": 3, "head_dim": 8}, ("m.arch", 5, 16): {"experts": 3, "expert": {
        "params": {"hidden": 48}}}, ("m.arch", 40, 1): {"heads": 1}}
    out, found = set_call_params(module, edits, _positional)
    assert found == {("m.arch", 4, 13), ("m.arch", 5, 16)}  # the third call does not exist
    text = format_module(set_repeat_count(out, ("m.arch", 8, 7), 1))
    assert "attention(rmsnorm(x), 3, causal=true, head_dim=8)" in text  # positional stays positional
    # `ffn` is read only there: the constant takes the new width and the call keeps its name
    assert "moe(rmsnorm(x), experts=3, expert=swiglu(hidden=ffn))" in text
    assert "repeat(1, layer)(x)" in text and "ffn = 48  # the FFN width" in text
    assert format_module(parse(text, "m.arch")) == text


def test_a_constant_read_elsewhere_too_stays_and_the_call_takes_the_value():
    spec = SPEC.replace("x = embed(tokens, 300, 32)", "x = embed(tokens, 300, 32)\n  y = ffn")
    out, _ = set_call_params(parse(spec, "m.arch"), {("m.arch", 5, 16): {"expert": {"params": {"hidden": 48}}}},
                             _positional)
    text = format_module(out)
    assert "ffn = 64  # the FFN width" in text and "expert=swiglu(hidden=48)" in text
