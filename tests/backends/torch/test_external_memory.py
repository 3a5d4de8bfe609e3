"""The external-memory layers: each module's output against its paper's equations written out
(`kernels/ntm/naive.py`, `kernels/dnc/naive.py`) on the module's own interface and output maps;
decoding with the memory as declared state against the forward; padding; a short training run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import archc
from archc.backends.torch import build
from archc.backends.torch.kernels.dnc import DNCInterface, naive_dnc
from archc.backends.torch.kernels.ntm import naive_ntm, split_interface
from tests.conftest import assert_padding_is_exact, assert_step_matches_forward, assert_trains

MEMORIES = {"ntm": "ntm_memory(rmsnorm(x), slots=8, width=4, read_heads=2, write_heads=2)",
            "dnc": "dnc_memory(rmsnorm(x), slots=8, width=4, read_heads=2)"}


def _model(which: str):
    spec = f"""
model m(tokens) {{
  x = embed(tokens, 64, 32)
  x = x + {MEMORIES[which]}
  return lm_head(rmsnorm(x))
}}
"""
    model = build(archc.loads(spec, "m.arch").graph, seed=0).eval()
    with torch.no_grad():  # stronger maps than the init's, so addressing is far from uniform
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.3)
    return model


def _layer(model):
    return next(m for _, m in model.op_modules() if m.op.endswith("_memory"))


def test_ntm_layer_equals_the_equations():
    layer = _layer(_model("ntm")).double().requires_grad_(False)
    x = torch.randn(2, 5, 32, dtype=torch.float64)
    raw = F.linear(x, layer.interface.weight, layer.interface.bias)
    p, m = layer.params, 4
    split = p.read_heads * p.read_interface()
    reads = [split_interface(raw[:, t, :split], m, 3, 2)[0] for t in range(5)]
    writes = [split_interface(raw[:, t, split:], m, 3, 2, 2 * m) for t in range(5)]
    erase = torch.stack([torch.sigmoid(w[1][..., :m]) for w in writes], 1)
    add = torch.stack([w[1][..., m:] for w in writes], 1)
    state = (torch.full((2, 8, 4), 1e-6, dtype=torch.float64), torch.zeros(2, 2, 8, dtype=torch.float64),
             torch.zeros(2, 2, 8, dtype=torch.float64))
    r, _ = naive_ntm(*state, reads, [w[0] for w in writes], erase, add)
    want = F.linear(r.flatten(2), layer.o_proj.weight, layer.o_proj.bias)
    torch.testing.assert_close(layer(x), want)


def test_dnc_layer_equals_the_equations():
    layer = _layer(_model("dnc")).double().requires_grad_(False)
    x = torch.randn(2, 5, 32, dtype=torch.float64)
    raw = F.linear(x, layer.interface.weight, layer.interface.bias)
    interfaces = [DNCInterface.parse(raw[:, t], 4, 2) for t in range(5)]
    state = tuple(torch.zeros(2, *s, dtype=torch.float64) for s in ((8, 4), (8,), (8,), (8, 8), (2, 8), (8,)))
    r, _ = naive_dnc(state, interfaces)
    want = F.linear(r.flatten(2), layer.o_proj.weight, layer.o_proj.bias)
    torch.testing.assert_close(layer(x), want)


@pytest.mark.parametrize("which", sorted(MEMORIES))
@pytest.mark.parametrize("chunks", [(1,) * 6 + (15,), (5, 1, 15)], ids=["tokens", "mixed"])
def test_decoding_with_the_memory_as_state_equals_the_forward(which, chunks):
    """In fp64: the DNC amplifies rounding (docs/onnx.md), so fp32 would hold the step to the CPU's."""
    assert_step_matches_forward(_model(which).double(), torch.randint(0, 64, (2, 21)), chunks, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("which", sorted(MEMORIES))
def test_padding_leaves_the_memory_alone(which):
    assert_padding_is_exact(_model(which), vocab=64)


@pytest.mark.parametrize("which", sorted(MEMORIES))
def test_trains(which):
    assert_trains(_model(which), vocab=64)
