from __future__ import annotations

import time

import pytest

import archc
from archc.errors import ArchError
from tests.conftest import diagnostics

HEAD = "model m(tokens) {\n  x = embed(tokens, 1000, 64)\n"


def _one(text: str, code: str, **kw):
    ds = [d for d in diagnostics(text, **kw) if d.severity == "error"]
    assert [d.code for d in ds] == [code], [str(d.message) for d in ds]
    return ds[0]


def test_graph_has_readable_ids_types_and_spans():
    g = archc.load("specs/llama-tiny.arch").graph
    assert "layers.3.attn" in g.nodes and "layers.0.mlp" in g.nodes
    n = g.nodes["layers.2.attn"]
    assert n.type.shape == ("batch", "seq", 256)
    assert n.span.file == "specs/llama-tiny.arch" and n.span.line == 12
    assert n.blocks == ("decoder",)
    assert g.nodes["lm_head"].ties == {"weight": "embed.weight"}
    assert g.outputs == ["lm_head"]
    import networkx as nx

    assert nx.is_directed_acyclic_graph(g.nx) and g.nx.number_of_nodes() == len(g.nodes)


def test_unknown_op_suggests_the_closest():
    d = _one(HEAD + "  return lm_head(atention(x, heads=4))\n}\n", "ARC0401")
    assert "attention" in d.hint and (d.span.line, d.span.col) == (3, 18)


def test_unknown_argument_suggests_the_closest():
    d = _one(HEAD + "  return lm_head(attention(x, head=4))\n}\n", "ARC0201")
    assert "`heads`" in d.hint and d.span.line == 3


def test_wrong_type_points_at_the_argument():
    d = _one(HEAD + '  return lm_head(attention(x, heads="four"))\n}\n', "ARC0202")
    assert "heads" in d.message and d.span.col == 31


def test_heads_must_divide_width():
    d = _one(HEAD + "  return lm_head(attention(x, heads=5))\n}\n", "ARC0303")
    assert "heads (5) does not divide the width (64)" in d.message


def test_kv_heads_must_divide_heads():
    d = _one(HEAD + "  return lm_head(attention(x, heads=8, kv_heads=3))\n}\n", "ARC0303")
    assert "kv_heads" in d.message


def test_s4_dplr_refuses_zero_order_hold():
    d = _one(HEAD + '  return lm_head(s4(x, mode="dplr", discretization="zoh"))\n}\n', "ARC0305")
    assert "bilinear" in d.message and 'discretization="bilinear"' in d.hint


def test_shape_mismatch_in_residual():
    d = _one(HEAD + "  y = linear(x, out=32)\n  return lm_head(x + y)\n}\n", "ARC0301")
    assert "float[batch, seq, 64]" in d.message and "float[batch, seq, 32]" in d.message


def test_token_ids_where_hidden_states_are_needed():
    d = _one("model m(tokens) {\n  return lm_head(rmsnorm(tokens), vocab=10)\n}\n", "ARC0302")
    assert "embed" in d.hint


def test_recursive_block_is_a_cycle_error():
    src = "model m(tokens) {\n  block f(x) {\n    return f(x)\n  }\n  return lm_head(f(embed(tokens, 10, 8)))\n}\n"
    # `f` is not yet bound inside its own body: calling it is an unknown name or a recursion
    d = diagnostics(src)
    assert d and all(x.severity == "error" for x in d)
    src2 = ("block g(x) {\n  return h(x)\n}\nblock h(x) {\n  return x\n}\n"
            "model m(tokens) {\n  return lm_head(g(embed(tokens, 10, 8)))\n}\n")
    assert [x.code for x in diagnostics(src2)] == ["ARC0401"]


def test_self_application_through_binding_is_detected():
    src = ("model m(tokens) {\n  block f(x, inner=0) {\n    return inner(x)\n  }\n"
           "  return lm_head(f(embed(tokens, 10, 8), inner=f))\n}\n")
    d = _one(src, "ARC0407")
    assert "calls itself" in d.message


def test_unused_value_is_a_warning():
    ds = diagnostics(HEAD + "  h = rmsnorm(x)\n  return lm_head(x)\n}\n")
    assert [(d.code, d.severity) for d in ds] == [("ARC0501", "warning")]
    assert ds[0].span.line == 3


def test_missing_return_and_missing_model():
    _one(HEAD + "}\n", "ARC0405")
    _one("d = 1\n", "ARC0405")


def test_independent_errors_are_all_reported():
    src = HEAD + "  a = attention(x, heads=5)\n  b = swiglu(x, hiden=3)\n  c = nope(x)\n  return lm_head(x)\n}\n"
    codes = sorted(d.code for d in diagnostics(src) if d.severity == "error")
    assert codes == ["ARC0201", "ARC0303", "ARC0401"]


def test_errors_do_not_cascade_from_a_poisoned_value():
    src = HEAD + "  y = nope(x)\n  z = rmsnorm(y)\n  return lm_head(z + y)\n}\n"
    assert [d.code for d in diagnostics(src)] == ["ARC0401"]


def test_constants_and_arithmetic():
    g = archc.loads("model m(t) {\n  d = 2 ** 6\n  h = d // 16\n  x = embed(t, 10 * 10, d)\n"
                    "  return lm_head(attention(x, heads=h, head_dim=d / h * 2))\n}\n").graph
    assert g.nodes["attn"].params["heads"] == 4 and g.nodes["attn"].params["head_dim"] == 32
    _one("model m(t) {\n  d = 1 / 0\n  return t\n}\n", "ARC0402")
    _one('model m(t) {\n  s = "ab" * 100000000\n  return t\n}\n', "ARC0402")


def test_pattern_expands_letters_in_order():
    g = archc.load("specs/jamba-tiny.arch").graph
    ops = [g.nodes[f"layers.{i}.mixer"].op if f"layers.{i}.mixer" in g.nodes else "attention" for i in range(8)]
    assert ops == ["mamba", "mamba", "mamba", "attention"] * 2
    assert g.nodes["layers.1.moe"].op == "moe" and g.nodes["layers.0.mlp"].op == "swiglu"


def test_pattern_letter_without_block():
    d = _one(HEAD + "  block b(x) {\n    return x\n  }\n  x = pattern(\"AB\", A=b)(x)\n  return lm_head(x)\n}\n",
             "ARC0401")
    assert "'B'" in d.message


def test_encoder_decoder_has_two_inputs_and_cross_attention():
    g = archc.load("specs/t5-small.arch").graph
    assert g.inputs == ["src", "tgt"]
    cross = g.nodes["decoder.0.cross_attn"]
    assert g.nodes[cross.inputs[1]].type.shape == ("batch", "seq_src", 512)
    assert cross.type.shape == ("batch", "seq_tgt", 512)


def test_higher_order_ops_hold_their_block_as_a_body():
    g = archc.load("specs/mod-tiny.arch").graph
    mod = g.nodes["layers.1.mod"]
    assert mod.body is not None and "attn" in mod.body.nodes and mod.body.outputs
    rmt = archc.load("specs/rmt-tiny.arch").graph.nodes["rmt"]
    assert "layers.3.attn" in rmt.body.nodes


def test_sections_are_validated():
    g = archc.load("specs/llama-tiny.arch").graph
    assert g.sections["export.onnx"]["opset"] == 23
    assert g.sections["train"]["optimizer"]["kwargs"]["lr"] == 3e-4
    d = _one(HEAD + "  return lm_head(x)\n  export onnx {\n    opset = 99\n  }\n}\n", "ARC0202")
    assert d.span.line == 5
    d = _one(HEAD + "  return lm_head(x)\n  train {\n    optimizer = adam(lr=1e-3)\n  }\n}\n", "ARC0202")
    assert "adamw" in d.message
    d = _one(HEAD + "  return lm_head(x)\n  parallel {\n    device = 8\n  }\n}\n", "ARC0201")
    assert "devices" in d.hint


def test_includes_resolve_inside_the_tree(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "blocks.arch").write_text("block ffn(x) {\n  return x + swiglu(x, hidden=16)\n}\n")
    (tmp_path / "m.arch").write_text('include "lib/blocks.arch"\nmodel m(t) {\n  return lm_head(ffn(embed(t, 10, 8)))\n}\n')
    g = archc.load(str(tmp_path / "m.arch")).graph
    assert g.nodes["ffn.mlp"].op == "swiglu"


def test_includes_outside_the_tree_are_refused(tmp_path):
    (tmp_path / "secret.arch").write_text("d = 1\n")
    sub = tmp_path / "proj"
    sub.mkdir()
    d = _one('include "../secret.arch"\nmodel m(t) {\n  return t\n}\n', "ARC0701", tmp_path=sub)
    assert d.span.line == 1
    _one('include "/etc/passwd"\nmodel m(t) {\n  return t\n}\n', "ARC0701", tmp_path=sub)
    (sub / "link.arch").symlink_to(tmp_path / "secret.arch")
    _one('include "link.arch"\nmodel m(t) {\n  return t\n}\n', "ARC0701", tmp_path=sub)


def test_include_cycles_and_missing_files(tmp_path):
    (tmp_path / "a.arch").write_text('include "b.arch"\n')
    (tmp_path / "b.arch").write_text('include "a.arch"\n')
    d = _one('include "a.arch"\nmodel m(t) {\n  return t\n}\n', "ARC0703", tmp_path=tmp_path)
    assert "a.arch -> b.arch -> a.arch" in d.message
    _one('include "nope.arch"\nmodel m(t) {\n  return t\n}\n', "ARC0702", tmp_path=tmp_path)


@pytest.mark.parametrize("src,code", [
    ("model m(t) {\n  d = 10000000\n  block b(x) {\n    return x + swiglu(x, hidden=4 * d)\n  }\n"
     "  return lm_head(repeat(32, b)(embed(t, 32000, d)))\n}\n", "ARC0601"),
    ("model m(t) {\n  block b(x) {\n    return x + swiglu(rmsnorm(x), hidden=64)\n  }\n"
     "  return lm_head(repeat(100000, b)(embed(t, 100, 16)))\n}\n", "ARC0602"),
    ("model m(t) {\n  block b(x) {\n    return x + swiglu(rmsnorm(x), hidden=64)\n  }\n"
     "  return lm_head(repeat(10 ** 15, b)(embed(t, 100, 16)))\n}\n", "ARC0602"),
    ("model m(t) {\n  block b(x) {\n    return x + swiglu(rmsnorm(x), hidden=64)\n  }\n"
     "  return lm_head(pattern(\"AB\" * 40000, A=b, B=b)(embed(t, 100, 16)))\n}\n", "ARC0602"),
])
def test_absurd_sizes_are_refused_fast_without_allocating(src, code):
    t0 = time.perf_counter()
    d = _one(src, code)
    assert time.perf_counter() - t0 < 1.0
    assert "limit" in d.message


def test_limits_can_be_raised():
    src = ("model m(t) {\n  block b(x) {\n    return x + swiglu(rmsnorm(x), hidden=64)\n  }\n"
           "  return lm_head(repeat(300, b)(embed(t, 100, 16)))\n}\n")
    _one(src, "ARC0602", max_nodes=500)
    assert archc.loads(src, max_nodes=10_000).graph


def test_arch_error_str_is_readable():
    with pytest.raises(ArchError) as e:
        archc.loads("model m(t) {\n  return nope(t)\n}\n", "x.arch")
    assert "x.arch:2:10: ARC0401" in str(e.value)


def test_a_tensor_scales_by_a_number():
    g = archc.loads(HEAD + "  x = x * 0.5\n  x = 2 * x\n  x = x / 8\n  return lm_head(x)\n}\n", "m.arch").graph
    assert [n.params["by"] for n in g.walk() if n.op == "scale"] == [0.5, 2.0, 0.125]
    assert _one(HEAD + "  return lm_head(x - 1)\n}\n", "ARC0202").message.startswith("cannot combine a tensor")
    assert _one(HEAD + "  return lm_head(1 / x)\n}\n", "ARC0202")
    assert _one(HEAD + "  return lm_head(x / 0)\n}\n", "ARC0402").message == "division by zero"
