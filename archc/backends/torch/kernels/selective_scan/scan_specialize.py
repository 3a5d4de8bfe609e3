"""What the selective-scan kernels are specialized to (importable without Triton)."""

from __future__ import annotations

from typing import Any

#: the largest state size a program holds (a [BD, N] fp32 slice in registers)
MAX_STATE = 256
#: tokens between the forward's state checkpoints, which the backward recomputes from
CHECKPOINT = 32


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def params(channels: int, states: int) -> dict[str, Any]:
    """The inner width E, the state size N, their blocks (≤ 2,048 state values a program), and the
    checkpoint interval."""
    bn = _pow2(states)
    return {"E": channels, "N": states, "BN": bn, "BD": max(1, min(_pow2(channels), 2048 // bn)), "C": CHECKPOINT}
