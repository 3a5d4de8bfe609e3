"""What the grouped-matmul kernels are specialized to (importable without Triton)."""

from __future__ import annotations

from typing import Any

#: rows of a tile (also the host's tile map's granularity)
BLOCK_ROWS = 32


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def params(out: int, red: int, trans: bool) -> dict[str, Any]:
    """A product of `red` → `out` features; `trans`: the weight read as stored (the backward's
    dX = dY·W_e) rather than transposed. Tiles of 32 rows and ≤ 64 × 64 (≥ 16 for `tl.dot`)."""
    return {"OUT": out, "RED": red, "TRANS": trans, "BM": BLOCK_ROWS, "BN": max(16, min(64, _pow2(out))),
            "BK": max(16, min(64, _pow2(red)))}
