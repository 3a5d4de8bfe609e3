"""Heads: the loss each implies, the tie rule of lm_head."""

from __future__ import annotations

import pytest

from tests.ops.contract import check_contract, ops_of, params, record

FAMILY = "heads"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


def test_losses_and_ties():
    assert record("lm_head").loss(params("lm_head", vocab=10)) == "lm"
    assert record("cls_head").loss(params("cls_head", classes=1)) == "regression"
    assert record("cls_head").loss(params("cls_head", classes=3)) == "classification"
    assert record("token_cls_head").loss(params("token_cls_head", classes=3)) == "token_classification"
    assert record("lm_head").ties(params("lm_head", tied=True)) == {"weight": ("embed", "weight")}
    assert record("lm_head").ties(params("lm_head", vocab=10)) == {}


def test_crf_head_counts_its_transitions():
    from tests.ops.contract import cost

    # emissions Linear(64, 5) with bias, transitions [5, 5], start and end [5]: pytorch-crf's
    assert cost("crf_head", classes=5).params == 64 * 5 + 5 + 25 + 5 + 5


def test_ctc_head_adds_the_blank():
    from tests.ops.contract import cost

    assert cost("ctc_head", classes=5).params == 64 * 6 + 6  # Linear(64, 5 symbols + the blank)
