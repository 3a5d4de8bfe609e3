"""What the selective-step kernel is specialized to (importable without Triton)."""

from __future__ import annotations

from typing import Any

#: the largest state size a program holds (a [BE, N] fp32 slice in registers)
MAX_STATE = 256


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def params(channels: int, states: int) -> dict[str, Any]:
    """The template's parameters: the inner width E, the state size N, and their blocks (a
    program's channels chosen so its state slice is at most 4,096 values)."""
    bn = _pow2(states)
    return {"E": channels, "N": states, "BN": bn, "BE": min(_pow2(channels), max(1, 4096 // bn))}
