"""The declared weights of every op record (DESIGN.md §3): every weight has a class, the cuts it
declares are exactly the axes the op's prune rule slices, and the parameter count `archc summary`
reports is the declared weights'."""

from __future__ import annotations

from collections import defaultdict

import pytest

from archc.docs_gen import example_params
from archc.ir.types import TensorType, hidden
from archc.ir.weights import Weight, conv1d, dense, parameter_count, under
from archc.ops import REGISTRY
from archc.ops.registry import CannotPrune, unit_slices

X = hidden("batch", "seq", 64)
WEIGHTED = sorted(n for n, op in REGISTRY.items() if op.kind == "layer")


def _example(name: str) -> tuple[object, list[TensorType]]:
    op = REGISTRY[name]
    ins = [TensorType(shape=("batch", "seq"), dtype="int")] if op.int_inputs else [X]
    return op.params(**example_params(op)), ins


def test_dense_and_conv_follow_torch_layouts():
    w, b = dense("q_proj", 64, 32, "projection", bias=True, cuts_out=("heads",), cuts_in=("ffn",))
    assert (w.name, w.shape, b.name, b.shape, b.init) == ("q_proj.weight", (32, 64), "q_proj.bias", (32,), "zeros")
    assert w.cuts == (("heads", 0), ("ffn", 1)) and b.cuts == (("heads", 0),)
    cw, cb = conv1d("conv1d", 128, 4, "conv")
    assert (cw.shape, cb.shape, cb.init) == ((128, 1, 4), (128,), "own")
    full = conv1d("compress", 64, 4, "memory", groups=1, init="normal")
    assert full[0].shape == (64, 64, 4) and full[1].init == "zeros"
    assert [x.name for x in under("experts.3", (w,))] == ["experts.3.q_proj.weight"]
    assert parameter_count((w, b, Weight("omega", (8, 8), "features", buffer=True))) == 64 * 32 + 32


@pytest.mark.parametrize("name", WEIGHTED)
def test_weights_are_named_once_and_cuts_match_the_prune_rule(name):
    """The declared cuts of each unit kind are exactly the (weight, axis) pairs its prune rule
    slices: a weight the rule names is declared, and no declared cut goes unused."""
    op = REGISTRY[name]
    p, ins = _example(name)
    weights = op.weights(p, ins)
    names = [w.name for w in weights]
    assert len(names) == len(set(names)), f"{name} declares a weight twice"
    by_name = {w.name: w for w in weights}
    declared: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for w in weights:
        for kind, axis in w.cuts:
            assert axis < len(w.shape), (name, w.name, kind, axis)
            declared[kind].add((w.name, axis))
    try:
        axes = op.prune(p, ins)
    except CannotPrune:
        axes = ()
    sliced: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for axis in axes:
        for unit in range(axis.units):
            for param, ax, _ in unit_slices(axis, unit):
                assert param in by_name, f"{name}: the prune rule slices `{param}`, which is not declared"
                sliced[axis.kind].add((param, ax))
    assert dict(sliced) == dict(declared), name
