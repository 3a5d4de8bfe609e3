"""Export-readiness: `torch.export` of the full forward with dynamic batch and sequence (run at
lengths other than the traced one), of `step` with a dynamic cache, and `torch.compile`."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

import archc
from archc.backends.torch import BackendError, build
from tests.conftest import SPECS, assert_exported_step_matches_forward, exportable_logits, exportable_step


def _buildable(spec):
    graph = archc.load(str(spec)).graph
    try:
        model = build(graph, seed=0).eval()
    except BackendError:
        return None
    if model.num_parameters() > 20_000_000:
        return None
    return model


_TINY = [s for s in SPECS if "tiny" in s.stem or s.stem in ("gated-conv-lm",)]


def _vocab(model):
    return min(model.out_type_vocab(), 256) if model.head == "lm_head" else 100


@pytest.mark.parametrize("spec", _TINY, ids=lambda p: p.stem)
def test_forward_exports_with_dynamic_batch_and_length(spec):
    model = _buildable(spec)
    if model is None or len(model.input_names) != 1:
        pytest.skip("not built by the torch backend yet")
    batch, seq = Dim("batch", min=1, max=64), Dim("seq", min=2, max=1024)
    ids = torch.randint(0, _vocab(model), (2, 24))
    ep = torch.export.export(exportable_logits(model), (ids,), dynamic_shapes={"ids": {0: batch, 1: seq}})
    for b, t in ((1, 7), (3, 50), (2, 129)):
        x = torch.randint(0, _vocab(model), (b, t))
        torch.testing.assert_close(ep.module()(x), model(x).logits, atol=1e-5, rtol=1.3e-6)


@pytest.mark.parametrize("extra", ["", ", window=6"], ids=["full-cache", "ring-buffer"])
def test_step_exports_with_dynamic_cache(extra):
    spec = f"""
model t(tokens) {{
  block decoder(x) {{
    x = x + attention(rmsnorm(x), heads=4, kv_heads=2, causal=true, pos=rope(){extra})
    return x + swiglu(rmsnorm(x), hidden=64)
  }}
  x = embed(tokens, 64, 32)
  x = repeat(2, decoder)(x)
  return lm_head(rmsnorm(x), tied=true)
}}"""
    model = build(archc.loads(spec, "t.arch").graph, seed=0).eval()
    state = model.init_state(2, 16)
    ids = torch.randint(0, 64, (2, 1))
    pos = torch.tensor(3)
    batch, cache = Dim("batch", min=1, max=64), Dim("cache", min=2, max=4096)
    # a ring buffer's length is the window, fixed by the spec; a full cache's is max_len, dynamic
    dyn = tuple({0: batch} if extra else {0: batch, 2: cache} for _ in state)
    ep = torch.export.export(exportable_step(model), (ids, pos, *state), dynamic_shapes=({0: batch}, None, dyn))
    # decode a sequence with the exported step and compare with the model's own forward
    seq = torch.randint(0, 64, (3, 20))
    st = model.init_state(3, 24)
    outs = []
    for i in range(20):
        lg, st = ep.module()(seq[:, i:i + 1], torch.tensor(i), *st)
        outs.append(lg)
    torch.testing.assert_close(torch.cat(outs, 1), model(seq).logits, atol=1e-5, rtol=1.3e-6)


@pytest.mark.parametrize("spec", _TINY, ids=lambda p: p.stem)
def test_step_exports_for_every_causal_spec(spec):
    """The exported `step` decodes token by token exactly as the model's own forward."""
    model = _buildable(spec)
    if model is None or not model.causal or len(model.input_names) != 1:
        pytest.skip("not a causal single-input model built by the torch backend")
    assert_exported_step_matches_forward(model, _vocab(model), 12)


@pytest.mark.parametrize("extra", ["causal=true, window=6", "window=8"], ids=["causal-window", "bidirectional-window"])
def test_blockwise_window_exports_with_dynamic_length(extra):
    """Sliding windows run blockwise (local_attention): the block count must stay symbolic, also
    when traced at a length shorter than one block."""
    spec = f"""
model t(tokens) {{
  x = embed(tokens, 64, 32)
  x = x + attention(x, heads=4, {extra})
  return lm_head(x)
}}"""
    model = build(archc.loads(spec, "t.arch").graph, seed=0).eval()
    ep = torch.export.export(exportable_logits(model), (torch.randint(0, 64, (2, 5)),),
                             dynamic_shapes={"ids": {0: Dim("batch", max=64), 1: Dim("seq", min=2, max=1024)}})
    for b, t in ((1, 3), (3, 50), (2, 129)):
        x = torch.randint(0, 64, (b, t))
        torch.testing.assert_close(ep.module()(x), model(x).logits, atol=1e-5, rtol=1.3e-6)


@pytest.mark.parametrize("spec", ["bigbird-tiny", "longformer-tiny", "perceiver-tiny"])
def test_compile_matches_eager_per_family(spec):
    """torch.compile (dynamic shapes) of one spec per op family equals eager, at two lengths: the
    bidirectional and latent families. The causal ones (Performer, the Universal Transformer,
    mixture-of-depths, Compressive, RMT, …) are tools/check_compiled.py's, at full tiny size with
    dynamic shapes, the training step and the compiled decode step (docs/performance.md)."""
    model = build(f"specs/{spec}.arch", seed=0).eval()
    compiled = torch.compile(model, dynamic=True)
    v = _vocab(model)
    for t in (40, 77):
        ids = torch.randint(0, v, (2, t))
        torch.testing.assert_close(compiled(ids).logits, model(ids).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mixer", ["mamba(x, d_state=8)", "mamba2(x, d_state=8, head_dim=16, chunk=16)",
                                   "retention(x, heads=2, chunk=16)", "rwkv_time_mix(x, version=4)",
                                   "rwkv_time_mix(x, version=6, head_size=16, mix_rank=4, decay_rank=8)",
                                   "mlstm(x, heads=2)", "slstm(x, heads=2)", "lstm(x, hidden=32)", "gru(x, hidden=32)",
                                   "gated_deltanet(x, heads=2, head_dim=8, chunk=16)", "gla(x, heads=2, chunk=8)",
                                   "rwkv7_time_mix(x, head_dim=16, chunk=8)", "hyena(x, max_len=128, filter_order=8)",
                                   "knn_attention(x, heads=2, topk=4, segment=16)",
                                   "associative_memory(x, segment=16, key_dim=8)"],
                         ids=lambda m: m.split("(")[0] + ("6" if "version=6" in m else ""))
def test_compile_matches_eager_for_recurrent_mixers(mixer):
    """torch.compile (dynamic shapes) around the chunked scans and sLSTM's loop, which run eagerly
    (a graph break: Inductor needs ~9 minutes for one unrolled Mamba scan, docs/architecture.md).
    Mamba's compile took over 3 minutes here until pyproject's filter on torch.jit's deprecation
    warnings: pytest recorded every one of them, and Dynamo triggers it again and again."""
    spec = f"""
model t(tokens) {{
  block layer(x) {{
    return x + {mixer.replace("(x", "(rmsnorm(x)", 1)}
  }}
  x = embed(tokens, 64, 32)
  x = repeat(1, layer)(x)
  return lm_head(rmsnorm(x), tied=true)
}}"""
    model = build(archc.loads(spec, "t.arch").graph, seed=0).eval()
    torch._dynamo.reset()  # compiled frames of the earlier tests' models would be recompiled against
    compiled = torch.compile(model, dynamic=True)
    for t in (40, 77):
        ids = torch.randint(0, 64, (2, t))
        torch.testing.assert_close(compiled(ids).logits, model(ids).logits, atol=1e-4, rtol=1e-4)
