"""The external memories' records: interface widths (the DNC's is the paper's W·R + 3W + 5R + 3),
declared state, parameter counts, the shift range check."""

from __future__ import annotations

import pytest

from tests.ops.contract import check_contract, cost, ops_of, shape_error, state

FAMILY = "external_memory"


@pytest.mark.parametrize("name", ops_of(FAMILY))
def test_contract(name):
    check_contract(name)


def test_ntm_interface_state_and_counts():
    memory, reads, writes = state("ntm_memory", slots=16, width=4, read_heads=2, write_heads=1, shift_range=1)
    assert memory.shape == (16, 4) and memory.fill == 1e-6 and reads.shape == (2, 16) and writes.shape == (1, 16)
    read_head, write_head = 4 + 3 + 3 + 1 - 1, 4 + 3 + 3 + 1 - 1 + 8  # key, β, g, 3 shifts, γ (+ erase, add)
    interface = 2 * read_head + write_head
    assert cost("ntm_memory", slots=16, width=4, read_heads=2).params == 64 * interface + interface + 2 * 4 * 64


def test_ntm_shift_range_must_fit_the_memory():
    assert shape_error("ntm_memory", slots=4, shift_range=2).arg == "shift_range"


def test_dnc_interface_is_the_papers():
    from archc.ops.external_memory import DNCParams

    assert DNCParams(width=16, read_heads=4).interface_width() == 16 * 4 + 3 * 16 + 5 * 4 + 3
    names = [s.name for s in state("dnc_memory", slots=8, width=4, read_heads=2)]
    assert names == ["memory", "usage", "precedence", "link", "read_weights", "write_weights"]
    i = 4 * 2 + 3 * 4 + 5 * 2 + 3
    assert cost("dnc_memory", slots=8, width=4, read_heads=2).params == 64 * i + i + 2 * 4 * 64
