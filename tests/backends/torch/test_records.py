"""Every op's torch module against its op record: the state it allocates is the declared state
(names, shapes, dtypes, initial values), its residual-init weights exist, and the state the whole
model allocates is what `archc summary` reports."""

from __future__ import annotations

import pytest
import torch

import archc
from archc.backends.torch import build
from archc.backends.torch.module import OpModule
from archc.ir.cost import CostCtx
from archc.ops import REGISTRY
from archc.ops.registry import graph_state
from archc.passes.estimate_cost import estimate_cost
from tests.conftest import SPECS

#: Specs small enough to build in a test (the 7B ones are costed, not built).
TINY = [p for p in SPECS if archc.summary(str(p)).total.params < 20_000_000]


def _first_spec_with(op: str):
    for p in TINY:
        if any(n.op == op for n in archc.load(str(p)).graph.walk()):
            return p
    return None


LAYER_OPS = sorted(n for n, op in REGISTRY.items() if op.kind == "layer" and _first_spec_with(n))


@pytest.mark.parametrize("op", LAYER_OPS)
def test_module_state_and_weights_follow_the_record(op):
    spec = _first_spec_with(op)
    model = build(archc.load(str(spec)).graph, seed=0)
    record = REGISTRY[op]
    mods = [m for m in model.modules() if isinstance(m, OpModule) and m.op == op]
    assert mods, f"{spec.stem} builds no module for {op}"
    for m in mods:
        params = dict(m.named_parameters())
        for name in record.residual_weights:
            assert name in params, f"{op}: residual weight {name} is not a parameter of its module"
        state = m.init_state(2, 24, torch.device("cpu"), torch.float16)
        assert len(state) == len(m.declared_state) == len(m.state_names)
        for t, s in zip(state, m.declared_state, strict=True):
            assert t.shape == (2, *s.sizes(24)), (op, s.name)
            want = {"fp32": torch.float32, "bool": torch.bool}.get(s.dtype, torch.float16)
            assert t.dtype == want, (op, s.name)
            if isinstance(s.fill, float):
                assert bool((t == s.fill).all()), (op, s.name)


@pytest.mark.parametrize("spec", TINY, ids=lambda p: p.stem)
def test_model_state_is_the_declared_state_and_the_summary(spec):
    graph = archc.load(str(spec)).graph
    model = build(graph, seed=0)
    declared = graph_state(graph)
    assert model.state_names == tuple(s.name for s in declared)
    state = model.init_state(1, 64, dtype=torch.float32)
    nbytes = sum(t.numel() * t.element_size() for t in state)
    assert nbytes == estimate_cost(graph, CostCtx(seq=64, dtype="fp32")).total.state_bytes
