"""What the WKV-4 decode kernel is specialized to (importable without Triton)."""

from __future__ import annotations

from typing import Any


def params(width: int) -> dict[str, Any]:
    """The channels A and the block of them a program takes (≤ 1,024)."""
    return {"A": width, "BLOCK": min(1024, 1 << max(0, (width - 1).bit_length()))}


def scan_params(width: int) -> dict[str, Any]:
    """The channels A and the block a program of the training scan walks: ≤ 64 channels, since the
    walk over the tokens is sequential and the batch × channel blocks are all the parallelism
    (BlinkDL's kernel runs a thread a channel)."""
    return {"A": width, "BLOCK": min(64, 1 << max(0, (width - 1).bit_length()))}
