"""FFNs: counts, the linear's new width, residual-init weights."""

from __future__ import annotations

import pytest

from tests.ops.contract import X, check_contract, cost, ops_of, params, record

FAMILY = "ffn"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


def test_counts_and_roles():
    assert cost("swiglu", hidden=32).params == 3 * 64 * 32
    assert record("linear").shape(params("linear", out=8), [X]).width == 8
    residual = [w.name for w in record("mlp").weights(params("mlp", hidden=8), [X]) if w.init == "residual"]
    assert residual == ["down_proj.weight"] and record("gelu").role == "activation"
