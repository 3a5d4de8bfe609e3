"""What the sLSTM decode kernel is specialized to (importable without Triton)."""

from __future__ import annotations

from typing import Any

#: the widest head one program holds: four [D, D] blocks of the recurrent weights
MAX_HEAD = 128


def params(head: int) -> dict[str, Any]:
    """The head width D and its block (a power of two ≥ 16)."""
    return {"D": head, "BD": max(16, 1 << max(0, (head - 1).bit_length()))}
