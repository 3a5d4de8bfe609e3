"""`archc export --target ort`: nodes whose math is one of onnxruntime's fused operators become that
operator, checked against the torch module (`check_parity`); the rest are traced, and the export
says which and why. `--target onnx` keeps to standard operators."""

from __future__ import annotations

import onnx
import pytest

import archc
from archc.backends.onnx.export import check_parity, export_model
from archc.backends.torch import build

#: GPT-2-style: LayerNorm, q/k/v and output biases, learned positions (no rotary in attention),
#: MHA with head_dim 16.
GPT = """
model gpt(tokens) {
  block layer(x) {
    x = x + attention(layernorm(x), heads=2, bias=true, causal=true)
    return x + mlp(layernorm(x), hidden=64)
  }
  x = learned_pos(embed(tokens, 200, 32), max_len=256)
  x = repeat(2, layer)(x)
  return lm_head(layernorm(x), tied=true)
}
"""

#: What GroupQueryAttention does not compute: a head_dim of 8 (its CPU kernel takes multiples of
#: 16); the windowed layer beside it is then inside the decoder's two forms.
REFUSED = """
model odd(tokens) {
  x = embed(tokens, 200, 32)
  x = x + attention(rmsnorm(x), heads=2, kv_heads=1, causal=true, window=8, pos=rope())
  x = x + attention(rmsnorm(x), heads=4, causal=true, pos=rope())
  return lm_head(rmsnorm(x), tied=true)
}
"""


def _ops(path) -> set[tuple[str, str]]:
    m = onnx.load(path)
    out = set()

    def walk(g):
        for n in g.node:
            out.add((n.domain, n.op_type))
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)

    walk(m.graph)
    return out


def _export(text: str, folder, target: str = "ort"):
    model = build(archc.loads(text, "m.arch").graph, seed=2).eval()
    report = export_model(model, folder, text, "m", "random", target=target)
    return model, report


def test_a_gpt_style_decoder_becomes_onnxruntime_operators(tmp_path):
    model, report = _export(GPT, tmp_path / "ort")
    ops = _ops(tmp_path / "ort" / "model.onnx")
    assert {("com.microsoft", "GroupQueryAttention"), ("com.microsoft", "SkipLayerNormalization"),
            ("", "LayerNormalization")} <= ops and ("", "If") not in ops
    assert report.manifest.target == "ort" and not report.not_lowered
    assert sorted(set(report.lowered.values())) == ["BiasGelu", "GroupQueryAttention", "LayerNormalization",
                                                    "SkipLayerNormalization"]
    rows = check_parity(model, tmp_path / "ort", lengths=(1, 17), prefill=9, steps=6)
    assert all(r.ok for r in rows), rows


#: Every activation `mlp` and `linear_act` (the `fuse_bias_act` pass) take, with and without
#: biases: onnxruntime's bias-fused GELUs where there is a bias, QuickGelu(α = 1) as SiLU.
ACTIVATIONS = """
model acts(tokens) {
  x = embed(tokens, 200, 32)
  x = x + mlp(layernorm(x), hidden=48, act="gelu_tanh")
  x = x + mlp(layernorm(x), hidden=48, act="relu", bias=false)
  x = x + mlp(layernorm(x), hidden=48, act="silu")
  x = x + linear(gelu(linear(layernorm(x), out=40)), out=32)
  x = x + linear(tanh(linear(layernorm(x), out=40, bias=false)), out=32)
  return lm_head(layernorm(x), tied=true)
}
"""


def test_a_dense_layer_and_its_activation_are_one_bias_fused_operator(tmp_path):
    model, report = _export(ACTIVATIONS, tmp_path / "acts")
    assert not report.not_lowered
    assert {k: v for k, v in report.lowered.items() if k.startswith(("mlp", "proj"))} == {
        "mlp": "FastGelu", "mlp_1": "Relu", "mlp_2": "QuickGelu", "proj": "BiasGelu", "proj_2": "Tanh"}
    rows = check_parity(model, tmp_path / "acts", lengths=(1, 17), prefill=9, steps=6)
    assert all(r.ok for r in rows), rows


#: Qwen3-style: per-head q/k RMSNorms (packed q/k/v at O2 and unpacked at O0), a head_dim wider
#: than width / heads
QWEN3 = """
model qwen3(tokens) {
  x = embed(tokens, 200, 32)
  x = x + attention(rmsnorm(x), heads=4, kv_heads=2, head_dim=16, causal=true, qk_norm=true, qk_norm_eps=1e-5,
                    pos=rope(theta=1e6))
  return lm_head(rmsnorm(x), tied=true)
}
"""


def _perturbed(text: str, seed: int, names: tuple[str, ...] | None = None):
    """The spec's module with its 1-D parameters (those ending in `names`, if given) moved off their
    constant inits (ones, zeros), so that a swapped, skipped or mis-offset norm shows."""
    import torch

    model = build(archc.loads(text, "m.arch").graph, seed=seed).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and (names is None or name.endswith(names)):
                p.add_(torch.randn_like(p) * 0.3)
    return model


def _exported_at_parity(model, folder, text: str, target: str, **kw):
    """Export `model` (`target`) and check onnxruntime against the torch module (forward, padded,
    prefill + steps); returns the export's report."""
    report = export_model(model, folder, text, "m", "random", target=target, **kw)
    rows = check_parity(model, folder, lengths=(1, 17), prefill=9, steps=4)
    assert all(r.ok for r in rows), rows
    return report


@pytest.mark.parametrize("pipeline", ["O0", "O2"])
def test_q_and_k_norms_go_before_groupqueryattention(tmp_path, pipeline):
    model = _perturbed(QWEN3, 2, ("q_norm.weight", "k_norm.weight"))
    report = _exported_at_parity(model, tmp_path / pipeline, QWEN3, "ort", pipeline=pipeline)
    assert report.lowered["attn"] == "RMSNormalization+GroupQueryAttention"


#: OLMo's LayerNorm without parameters, plain and fused into the residual add before it
OLMO = """
model olmo(tokens) {
  x = embed(tokens, 200, 32)
  x = x + attention(layernorm(x, affine=false), heads=2, causal=true, pos=rope())
  x = x + swiglu(layernorm(x, affine=false), hidden=48)
  return lm_head(layernorm(x, affine=false), tied=true)
}
"""


@pytest.mark.parametrize("target", ["ort", "onnx"])
def test_a_layernorm_without_parameters_exports_with_a_unit_scale(tmp_path, target):
    model, report = _export(OLMO, tmp_path / target, target)
    assert not any(k.endswith(("norm.weight", "norm.bias", "norm_1.weight")) for k in model.state_dict())
    assert {"SkipLayerNormalization" if target == "ort" else "LayerNormalization"} <= set(report.lowered.values())
    rows = check_parity(model, tmp_path / target, lengths=(1, 17), prefill=9, steps=4)
    assert all(r.ok for r in rows), rows


def test_what_the_operator_does_not_compute_is_traced_and_said(tmp_path):
    model, report = _export(REFUSED, tmp_path / "ort")
    attention = {k: v for k, v in report.not_lowered.items() if k.startswith("attn")}
    assert attention["attn_1"] == "head_dim 8: onnxruntime's CPU GroupQueryAttention takes multiples of 16"
    assert "prefill/decode branches" in attention["attn"]
    # and with the decoder's two forms kept, the fused norms stay traced too (the reason given)
    assert all("prefill/decode branches" in why for k, why in report.not_lowered.items() if k.startswith("norm"))
    assert ("", "If") in _ops(tmp_path / "ort" / "model.onnx")  # the traced caches keep two forms
    rows = check_parity(model, tmp_path / "ort", lengths=(1, 17), prefill=9, steps=6)
    assert all(r.ok for r in rows), rows


#: Mistral-style: a causal sliding window with GQA and RoPE (window 8, shorter than the parity
#: prompts), beside a full-context layer.
WINDOWED = """
model mistral(tokens) {
  x = embed(tokens, 200, 64)
  x = x + attention(rmsnorm(x), heads=4, kv_heads=2, causal=true, window=8, pos=rope())
  x = x + attention(rmsnorm(x), heads=4, kv_heads=2, causal=true, pos=rope())
  return lm_head(rmsnorm(x), tied=true)
}
"""


def test_a_sliding_window_is_groupqueryattention_over_a_growing_cache(tmp_path):
    """`local_window_size` reads the last `window` positions of a full-length cache (archc's
    window, the query's own included), so the windowed layer's decoder cache grows where the
    torch module keeps a ring buffer; prefill, continued prefill and steps past the window
    match the torch module."""
    model, report = _export(WINDOWED, tmp_path / "w")
    assert not report.not_lowered and report.lowered["attn"] == "GroupQueryAttention"
    graph = onnx.load(tmp_path / "w" / "model.onnx").graph
    windows = {a.i for n in graph.node if n.op_type == "GroupQueryAttention"
               for a in n.attribute if a.name == "local_window_size"}
    assert windows == {8} and ("", "If") not in _ops(tmp_path / "w" / "model.onnx")
    assert all(s.shape[2] == "past_seq" for s in report.manifest.state)
    rows = check_parity(model, tmp_path / "w", lengths=(1, 17), prefill=9, steps=6)
    assert all(r.ok for r in rows), rows


def test_the_onnx_target_keeps_to_standard_operators(tmp_path):
    _, report = _export(GPT, tmp_path / "std", target="onnx")
    assert report.manifest.target == "onnx" and set(report.lowered.values()) == {"LayerNormalization"}
    assert not any(domain for domain, _ in _ops(tmp_path / "std" / "model.onnx"))


def test_an_unknown_target_is_refused(tmp_path):
    from archc.backends.onnx import ExportError

    with pytest.raises(ExportError, match="unknown target `tensorrt`"):
        _export(GPT, tmp_path / "x", target="tensorrt")


def test_a_hybrid_keeps_its_attention_traced_inside_the_two_forms(tmp_path):
    """A recurrent layer keeps the decoder's prefill/decode `If`; inside it no contrib operator is
    used (measured: onnxruntime's static int8 quantizer then writes a graph it cannot load)."""
    text = """
model hybrid(tokens) {
  x = embed(tokens, 200, 32)
  x = x + mamba(rmsnorm(x), d_state=4)
  x = x + attention(rmsnorm(x), heads=2, causal=true, pos=rope())
  return lm_head(rmsnorm(x), tied=true)
}
"""
    model, report = _export(text, tmp_path / "h")
    assert "prefill/decode branches" in report.not_lowered["attn"]
    assert ("com.microsoft", "GroupQueryAttention") not in _ops(tmp_path / "h" / "model.onnx")
    assert all(r.ok for r in check_parity(model, tmp_path / "h", lengths=(9,), prefill=5, steps=3))


#: The recurrent mixers onnxruntime has operators for, at two shapes each: Mamba-2 with groups
#: sharing B/C (fewer query heads) and without; Gated DeltaNet with key heads serving two value
#: heads and one; RetNet with its xPos rotation and per-head decays.
RECURRENT = {
    "mamba2": """
model m(tokens) {
  x = embed(tokens, 200, 64)
  x = x + mamba2(rmsnorm(x), d_state=16, expand=2, head_dim=16, groups=2, chunk=8, d_conv=4)
  x = x + mamba2(rmsnorm(x), d_state=16, expand=2, head_dim=32, groups=1, chunk=8, d_conv=3)
  return lm_head(rmsnorm(x), tied=true)
}""",
    "gated_deltanet": """
model m(tokens) {
  x = embed(tokens, 200, 64)
  x = x + gated_deltanet(rmsnorm(x), heads=2, head_dim=16, v_heads=4, v_head_dim=16, d_conv=4, chunk=8)
  x = x + gated_deltanet(rmsnorm(x), heads=2, head_dim=16, v_heads=2, v_head_dim=32, d_conv=4, chunk=8)
  return lm_head(rmsnorm(x), tied=true)
}""",
    "retention": """
model m(tokens) {
  x = embed(tokens, 200, 64)
  x = x + retention(layernorm(x), heads=4, value_factor=2, chunk=8)
  return lm_head(layernorm(x), tied=true)
}""",
}

FUSED = {
    "mamba2": {"CausalConvWithState", "LinearAttention"},
    "gated_deltanet": {"CausalConvWithState", "LinearAttentionGate", "LinearAttention", "GatedRMSNorm"},
    "retention": {"RotaryEmbedding", "LinearAttention"},
}


@pytest.mark.parametrize("op", sorted(RECURRENT))
def test_a_recurrent_decoder_is_one_graph_of_onnxruntime_operators(tmp_path, op):
    """Every stateful node lowers to operators that take any number of new tokens after a
    state, so the decoder has no prefill/decode `If`; prefill, continued prefill and steps match
    the torch module (`check_parity`: the recurrence's chunked and step forms on the torch side)."""
    model, report = _export(RECURRENT[op], tmp_path / op)
    ops = _ops(tmp_path / op / "model.onnx")
    assert {("com.microsoft", t) for t in FUSED[op]} <= ops and ("", "If") not in ops
    # at O2 retention's q, k, v and g are one projection (`pack_in_proj`)
    mixers = [v for k, v in report.lowered.items() if model.graph.nodes[k].op in (op, f"{op}_packed")]
    assert {model.graph.nodes[k].op for k in report.lowered} & {"retention", "mamba2", "gated_deltanet"} == \
        ({op} - {"retention"})
    assert mixers and all(FUSED[op] <= set(v.split("+")) for v in mixers) and not report.not_lowered
    # Mamba-2's SSM state stays in LinearAttention's layout [B, H, N, P] (no transpose per step)
    axes = {s.state: s.axes for s in report.manifest.state}
    assert axes == ({"conv": None, "ssm": [0, 2, 1]} if op == "mamba2" else
                    dict.fromkeys(axes))
    rows = check_parity(model, tmp_path / op, lengths=(1, 17), prefill=9, steps=6)
    assert all(r.ok for r in rows), rows


def _run(op: str, inputs: dict, n_out: int = 2, **attrs):
    import onnxruntime as ort
    from onnx import TensorProto, helper

    names = list(inputs)
    node = helper.make_node(op, [n if inputs[n] is not None else "" for n in names], [f"o{i}" for i in range(n_out)],
                            domain="com.microsoft", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                                            for n in names if inputs[n] is not None],
                              [helper.make_tensor_value_info(f"o{i}", TensorProto.FLOAT, None) for i in range(n_out)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23), helper.make_opsetid("com.microsoft", 1)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {n: v for n, v in inputs.items() if v is not None})


@pytest.mark.parametrize("rule,per_key", [("gated", False), ("gated", True), ("gated_delta", False)])
def test_linear_attention_computes_the_recurrence_the_lowerings_rely_on(rule, per_key):
    """onnxruntime's `LinearAttention` against the recurrence written out in float64 (the schema's
    equations): decay per head or per key dimension, the delta rule, two query heads each serving
    three consecutive key/value heads (Mamba-2's groups, Gated DeltaNet's key heads)."""
    import numpy as np

    rng = np.random.default_rng(0)
    b, t, hq, h, dk, dv = 2, 5, 2, 6, 4, 3
    q, k = rng.standard_normal((b, t, hq, dk)), rng.standard_normal((b, t, h, dk)) * 0.5
    v, s0 = rng.standard_normal((b, t, h, dv)), rng.standard_normal((b, h, dk, dv))
    g = -np.abs(rng.standard_normal((b, t, h, dk) if per_key else (b, t, h)))
    beta = 1 / (1 + np.exp(-rng.standard_normal((b, t, h))))
    f32 = {n: a.astype(np.float32) for n, a in dict(q=q, k=k, v=v, s0=s0, g=g, beta=beta).items()}
    o, s = _run("LinearAttention", {"q": f32["q"].reshape(b, t, -1), "k": f32["k"].reshape(b, t, -1),
                                    "v": f32["v"].reshape(b, t, -1), "s0": f32["s0"],
                                    "g": f32["g"].reshape(b, t, -1),
                                    "beta": f32["beta"] if rule == "gated_delta" else None},
                q_num_heads=hq, kv_num_heads=h, update_rule=rule, scale=0.5)
    state, outs = f32["s0"].astype(np.float64), []
    qh = np.repeat(f32["q"].astype(np.float64), h // hq, axis=2)  # head i serves i·h/hq …
    for i in range(t):
        decay = np.exp(f32["g"][:, i] if per_key else np.repeat(f32["g"][:, i, :, None], dk, -1))[..., None]
        ki, vi = f32["k"][:, i], f32["v"][:, i]
        if rule == "gated_delta":
            state = decay * state
            err = vi - np.einsum("bhk,bhkv->bhv", ki, state)
            state = state + f32["beta"][:, i, :, None, None] * np.einsum("bhk,bhv->bhkv", ki, err)
        else:
            state = decay * state + np.einsum("bhk,bhv->bhkv", ki, vi)
        outs.append(0.5 * np.einsum("bhk,bhkv->bhv", qh[:, i], state))
    # fp32 inputs, an fp32 kernel against float64: sums of 4 products over 5 steps, |o| ≲ 10, so
    # the rounding is ~1e-6 relative; 1e-5 leaves a decade for another CPU's kernels
    np.testing.assert_allclose(o, np.stack(outs, 1).reshape(b, t, -1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s, state, rtol=1e-5, atol=1e-5)


def test_causal_conv_with_state_is_a_depthwise_conv_over_the_carried_inputs():
    """`CausalConvWithState` (silu) against `torch.nn.functional.conv1d` over the carried K − 1
    inputs and the new ones; its new carry is their last K − 1."""
    import numpy as np
    import torch

    rng = np.random.default_rng(1)
    b, c, t, k = 2, 6, 5, 4
    x, w = rng.standard_normal((b, c, t)).astype(np.float32), rng.standard_normal((c, 1, k)).astype(np.float32)
    bias, carry = rng.standard_normal(c).astype(np.float32), rng.standard_normal((b, c, k - 1)).astype(np.float32)
    y, new = _run("CausalConvWithState", {"x": x, "w": w, "bias": bias, "carry": carry}, activation="silu")
    window = torch.cat((torch.from_numpy(carry), torch.from_numpy(x)), dim=2)
    ref = torch.nn.functional.silu(torch.nn.functional.conv1d(window, torch.from_numpy(w), torch.from_numpy(bias),
                                                              groups=c))
    np.testing.assert_allclose(y, ref.numpy(), rtol=1e-5, atol=1e-5)  # two fp32 convs of 4 taps
    np.testing.assert_array_equal(new, window[:, :, -(k - 1):].numpy())  # a copy: exact


#: Gemma 2/3, OLMo 2 and Granite's settings: RMSNorms scaled by 1 + weight (plain and fused into
#: the residual add), q/k norms over the width with a unit offset, a score scale and soft-capping,
#: a residual multiplier, a per-token sigmoid gate broadcast over the width, a capped head; YaRN
#: rope (its ramp and temperature in the operator's cos/sin tables).
SETTINGS = """
model settings(tokens) {
  x = embed(tokens, 200, 64) * 4
  x = x + rmsnorm(attention(rmsnorm(x, unit_offset=true), heads=4, kv_heads=2, head_dim=16, causal=true,
                            scale=0.1, softcap=2.0, qk_norm=true, qk_norm_width=true,
                            qk_norm_unit_offset=true, pos=rope(scaling="yarn", factor=4, original_max_len=16)),
                 unit_offset=true) * 0.5
  h = rmsnorm(x, unit_offset=true)
  x = x + sigmoid(linear(h, out=1, name="gate")) * swiglu(h, hidden=48)
  return lm_head(rmsnorm(x) / 2, tied=true, softcap=3.0)
}
"""


@pytest.mark.parametrize("target", ["ort", "onnx"])
def test_family_settings_export_at_both_targets(tmp_path, target):
    report = _exported_at_parity(_perturbed(SETTINGS, 3), tmp_path / target, SETTINGS, target)
    if target == "ort":
        assert report.lowered["attn"] == "RMSNormalization+GroupQueryAttention"


#: Qwen3-Next's gated attention: each head's output times a sigmoid of its second query projection
GATED = """
model gated(tokens) {
  x = embed(tokens, 200, 64)
  x = x + attention(rmsnorm(x), heads=4, kv_heads=2, head_dim=16, causal=true, out_gate=true, qk_norm=true,
                    pos=rope())
  return lm_head(rmsnorm(x), tied=true)
}
"""


def test_gated_attention_is_traced_and_exact(tmp_path):
    report = _exported_at_parity(_perturbed(GATED, 4), tmp_path / "g", GATED, "ort")
    assert "output gate" in report.not_lowered["attn"]
