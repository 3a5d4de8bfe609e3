"""The lowering table mirrors the op records: every layer op has a torch implementation, in the
backend family file of the same name as the op record's family file."""

from __future__ import annotations

import pkgutil
import sys

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
