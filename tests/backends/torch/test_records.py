"""Every op's torch module against its op record: the state it allocates is the declared state
(names, shapes, dtypes, initial values), its tensors are the declared weights, initialized as
their init roles say, and the state the whole model allocates is what `archc summary` reports."""

from __future__ import annotations

import pytest
import torch

import archc
from archc.backends.torch import build
from archc.backends.torch.module import OpModule
from archc.ir.cost import CostCtx
from archc.ops import REGISTRY
from archc.passes.estimate_cost import estimate_cost
from archc.passes.facts import graph_state
from tests.conftest import SPECS

#: Specs small enough to build in a test (the 7B ones are costed, not built).
TINY = [p for p in SPECS if archc.summary(str(p)).total.params < 20_000_000]


def _where_ops_are() -> dict[str, tuple[object, str]]:
    """op -> (the first tiny spec whose graph has it, the level: `O0` as written, or `O2` for
    the fused ops the passes make)."""
    from archc.passes.manager import run

    out: dict[str, tuple[object, str]] = {}
    for level in ("O0", "O2"):
        for p in TINY:
            graph = archc.load(str(p)).graph
            for n in (graph if level == "O0" else run(graph, level).graph).walk():
                out.setdefault(n.op, (p, level))
    return out


WHERE = _where_ops_are()
LAYER_OPS = sorted(n for n, op in REGISTRY.items() if op.kind == "layer" and n in WHERE)


def _build_with(op: str):
    spec, level = WHERE[op]
    return spec, build(archc.load(str(spec)).graph, seed=0, pipeline=level)


@pytest.mark.parametrize("op", LAYER_OPS)
def test_module_state_and_weights_follow_the_record(op):
    spec, model = _build_with(op)
    record = REGISTRY[op]
    mods = [m for m in model.modules() if isinstance(m, OpModule) and m.op == op]
    assert mods, f"{spec.stem} builds no module for {op}"
    for m in mods:
        assert m.undeclared() == [], op
        # every tensor it holds is a parameter or a buffer: a plain tensor attribute would be
        # baked into its exported graph as a constant, which `export_identity` does not cover
        plain = [f"{name}.{k}" for name, sub in m.named_modules() for k, v in vars(sub).items()
                 if isinstance(v, torch.Tensor)]
        assert plain == [], (op, plain)
        assert m.declared_weights == {w.name: w for w in record.weights(m.params, m.in_types)}
        state = m.init_state(2, 24, torch.device("cpu"), torch.float16)
        assert len(state) == len(m.declared_state) == len(m.state_names)
        for t, s in zip(state, m.declared_state, strict=True):
            assert t.shape == (2, *s.sizes(24)), (op, s.name)
            want = {"fp32": torch.float32, "bool": torch.bool}.get(s.dtype, torch.float16)
            assert t.dtype == want, (op, s.name)
            if isinstance(s.fill, float):
                assert bool((t == s.fill).all()), (op, s.name)


@pytest.mark.parametrize("op", LAYER_OPS)
def test_every_declared_weight_is_initialized_as_its_role_says(op):
    """Every weight is set by `initialize` (none left as it was allocated: NaN here), `zeros` and
    `ones` are exact, `normal` and `residual` have the std they promise (0.02, 0.02/√(2·mixers))."""
    _, model = _build_with(op)
    with torch.no_grad():
        for t in model.state_dict(keep_vars=True).values():
            if t.is_floating_point():
                t.fill_(float("nan"))
    model.initialize(seed=1)
    mixers = sum(1 for n in model.graph.walk() if REGISTRY[n.op].role == "mixer")
    for m in (m for m in model.modules() if isinstance(m, OpModule) and m.op == op):
        for name, w in m.declared_weights.items():
            t = m.get_parameter(name) if not w.buffer else m.get_buffer(name)
            assert torch.isfinite(t).all(), (op, name, "left uninitialized")
            if w.init in ("zeros", "ones"):
                assert bool((t == (w.init == "ones")).all()), (op, name, w.init)
            elif w.init in ("normal", "residual") and t.numel() >= 256:
                want = 0.02 / ((2 * max(mixers, 1)) ** 0.5 if w.init == "residual" else 1)
                assert 0.8 * want < t.float().std().item() < 1.2 * want, (op, name, w.init)


@pytest.mark.parametrize("spec", TINY, ids=lambda p: p.stem)
def test_model_state_is_the_declared_state_and_the_summary(spec):
    graph = archc.load(str(spec)).graph
    model = build(graph, seed=0)
    declared = graph_state(graph)
    assert model.state_names == tuple(s.name for s in declared)
    state = model.init_state(1, 64, dtype=torch.float32)
    nbytes = sum(t.numel() * t.element_size() for t in state)
    assert nbytes == estimate_cost(graph, CostCtx(seq=64, dtype="fp32")).total.state_bytes
