"""What the RMSNorm kernel is specialized to (importable without Triton: `archc kernels` and the
kernel choice read it where Triton is not installed)."""

from __future__ import annotations

from typing import Any

#: the widest row one program normalizes (its whole row in registers)
MAX_WIDTH = 65536


def params(width: int, residual: bool, unit_offset: bool) -> dict[str, Any]:
    """The template's parameters: the row width (and its power-of-two block), the fused residual
    add, Gemma's 1 + w scale."""
    return {"N": width, "BLOCK": 1 << (width - 1).bit_length(), "RESIDUAL": residual, "UNIT_OFFSET": unit_offset}
