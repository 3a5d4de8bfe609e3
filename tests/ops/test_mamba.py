"""Mamba's record: derived values on the schema, the state as transformers' MambaCache."""

from __future__ import annotations

import pytest

from tests.ops.contract import X, check_contract, ops_of, params, record, state

FAMILY = "mamba"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


def test_derived_values_and_state():
    p = params("mamba", d_state=16)
    assert (p.inner(64), p.dt_rank_for(64), p.dt_rank_for(65)) == (128, 4, 5)
    conv, ssm = state("mamba", d_state=16)
    assert (conv.shape, ssm.shape) == ((128, 4), (128, 16))
    residual = [w.name for w in record("mamba").weights(params("mamba"), [X]) if w.init == "residual"]
    assert residual == ["out_proj.weight"]
