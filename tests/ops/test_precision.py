"""The precision rule (DESIGN.md §3): every weight of every op has a class, from its op's rule or
its role, so that quantization never meets a weight nobody decided about."""

from __future__ import annotations

from pathlib import Path

import pytest

import archc
from archc.ops.registry import KEPT_BECAUSE, QUANTIZED_BY_DEFAULT, REGISTRY
from archc.passes.facts import weight_class

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted(p for p in (ROOT / "specs").glob("*.arch") if not any(big in p.name for big in ("7b", "70b", "175b")))


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_every_weight_of_every_spec_has_a_class(spec):
    pytest.importorskip("torch")
    model = archc.build(str(spec), device="meta")
    missing = [k for k, _ in model.named_parameters() if weight_class(model.graph, k) is None]
    assert not missing, missing


def test_classes_are_either_quantized_or_kept_for_a_reason():
    from typing import get_args

    from archc.ir.weights import TensorClass

    for cls in get_args(TensorClass):
        assert (cls in QUANTIZED_BY_DEFAULT) != (cls in KEPT_BECAUSE), cls


def _declared_class(op: str, param: str) -> str:
    """The class `op` declares for `param` at the reference's example parameters."""
    from archc.docs_gen import _example_weights

    return {w.name: w.cls for w in _example_weights(REGISTRY[op])}[param]


def test_rules_of_the_mixers_that_need_care():
    """What the issue names: projections and FFNs quantized; Δ, decays, the router, norms, the
    conv and recurrent weights kept."""
    cases = {("mamba", "in_proj.weight"): "projection", ("mamba", "dt_proj.weight"): "discretization",
             ("mamba", "conv1d.weight"): "conv", ("mamba2", "A_log"): "ssm", ("moe", "router.weight"): "router",
             ("moe", "experts.3.down_proj.weight"): "expert", ("rwkv_time_mix", "time_decay"): "decay",
             ("rwkv_time_mix", "receptance.weight"): "projection", ("slstm", "recurrent_kernel"): "recurrent",
             ("mlstm", "igate.weight"): "gate", ("rmsnorm", "weight"): "norm", ("swiglu", "up_proj.weight"): "ffn",
             ("attention", "q_proj.weight"): "projection", ("embed", "weight"): "embedding"}
    for (op, param), cls in cases.items():
        assert _declared_class(op, param) == cls, (op, param)


def test_weights_inside_higher_order_ops_take_their_body_nodes_rule():
    pytest.importorskip("torch")
    model = archc.build(str(ROOT / "specs" / "rmt-tiny.arch"), device="meta", pipeline="O0")
    keys = [k for k, _ in model.named_parameters()]
    inner = next(k for k in keys if ".body." in k and k.endswith("q_proj.weight"))
    assert weight_class(model.graph, inner) == "projection"
    assert weight_class(model.graph, next(k for k in keys if k.endswith(".memory"))) == "memory"
