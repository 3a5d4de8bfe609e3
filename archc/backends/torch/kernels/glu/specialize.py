"""What the GLU gating kernel is specialized to (importable without Triton)."""

from __future__ import annotations

from typing import Any

#: units a program gates (a row's hidden units in blocks of this many at most)
MAX_BLOCK = 1024


def params(hidden: int, act: str, packed: bool) -> dict[str, Any]:
    """The template's parameters: the hidden width, its block (a power of two, ≤ `MAX_BLOCK`), the
    activation, and whether gate and up come packed in one [.., 2·hidden] tensor."""
    return {"H": hidden, "BLOCK": min(MAX_BLOCK, 1 << (hidden - 1).bit_length()), "ACT": act, "PACKED": packed}
