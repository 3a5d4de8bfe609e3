"""The lowering table mirrors the op records: every layer op has a torch implementation, every
arithmetic op a torch and an ONNX one, each in the backend family file of the same name as the op
record's family file."""

from __future__ import annotations

import pkgutil
import sys

import pytest

import archc.backends.onnx.ops as onnx_ops
import archc.backends.torch.ops as torch_ops
import archc.ops as front
from archc.backends.lowering import lowering, lowerings
from archc.ops import REGISTRY


def _family(module: str) -> str:
    return module.rsplit(".", 1)[-1]


def test_every_layer_op_has_a_torch_lowering_in_the_mirrored_family_file():
    impls = lowerings("torch")
    for name, op in REGISTRY.items():
        if op.kind != "layer":
            continue
        assert name in impls, f"`{name}` has no torch lowering"
        assert _family(impls[name].__module__) == _family(op.params.__module__), (
            f"`{name}` is recorded in ops/{_family(op.params.__module__)}.py but implemented in "
            f"backends/torch/ops/{_family(impls[name].__module__)}.py")


def test_backend_family_files_mirror_the_front_ones():
    fronts = {m.name for m in pkgutil.iter_modules(front.__path__)} - {"registry"}
    backs = {m.name for m in pkgutil.iter_modules(torch_ops.__path__)}
    assert backs <= fronts, backs - fronts  # no backend file without its op records
    # the front families without a torch file hold no layer ops (the interpreter runs them inline)
    for fam in fronts - backs:
        mod = sys.modules[f"archc.ops.{fam}"]
        assert not [n for n, op in REGISTRY.items() if op.kind == "layer" and op.params.__module__ == mod.__name__]


def test_a_missing_lowering_is_none():
    assert lowering("attention", "torch") is not None
    assert lowering("nope", "torch") is None


def test_arithmetic_is_lowered_exhaustively_in_both_backends():
    """No `arith` op falls through to a default (both backends once multiplied anything that was
    not `add`)."""
    for backend in ("torch", "onnx"):
        impls = lowerings(backend)
        for name, op in REGISTRY.items():
            if op.kind == "arith":
                assert name in impls, f"`{name}` has no {backend} lowering"
                impl = getattr(impls[name], "emit", impls[name])  # an ONNX `Lowering`: its function
                assert _family(impl.__module__) == _family(op.params.__module__)


def test_onnx_family_files_mirror_the_front_ones():
    import archc.backends.onnx.ort as ort_ops

    fronts = {m.name for m in pkgutil.iter_modules(front.__path__)} - {"registry"}
    assert {m.name for m in pkgutil.iter_modules(onnx_ops.__path__)} <= fronts
    assert {m.name for m in pkgutil.iter_modules(ort_ops.__path__)} <= fronts


def test_an_arith_op_without_a_lowering_is_refused_not_guessed(monkeypatch):
    import archc
    from archc.backends import lowering as table
    from archc.backends.torch.model import BackendError, GraphModule

    graph = archc.loads("model m(t) {\n  x = embed(t, 16, 8)\n  return lm_head(x * x, vocab=16)\n}", "m.arch").graph
    lowerings("torch")
    monkeypatch.delitem(table._TABLE, ("mul", "torch"))
    with pytest.raises(BackendError, match="`mul` has no torch lowering"):
        GraphModule(graph)


def test_onnx_entries_sit_in_their_families_file():
    for backend in ("onnx", "ort"):
        for name, entry in lowerings(backend).items():
            assert _family(entry.emit.__module__) == _family(REGISTRY[name].params.__module__), (backend, name)
