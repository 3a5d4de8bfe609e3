"""What the LayerNorm kernel is specialized to (importable without Triton)."""

from __future__ import annotations

from typing import Any

#: the widest row one program normalizes (its whole row in registers)
MAX_WIDTH = 65536


def params(width: int, residual: bool, weight: bool, bias: bool) -> dict[str, Any]:
    """The template's parameters: the row width and its power-of-two block, the fused residual add,
    whether the norm scales (`affine`) and shifts (`bias`)."""
    return {"N": width, "BLOCK": 1 << (width - 1).bit_length(), "RESIDUAL": residual, "WEIGHT": weight, "BIAS": bias}
