"""What the gated-delta chunk kernels are specialized to (importable without Triton)."""

from __future__ import annotations

from typing import Any

#: the widest key or value one program holds: a chunk's [C, K] and [C, V] tiles, its [C, C]
#: inverse and the [K, V] state all stay in registers
MAX_WIDTH = 128


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def params(key: int, value: int, chunk: int) -> dict[str, Any]:
    """Key and value widths and their blocks (powers of two ≥ 16, what `tl.dot` takes on a GPU),
    the kernel's chunk (the spec's rounded to a power of two in [16, 64]: the chunk only regroups
    the same recurrence; flash-linear-attention uses 64), the squarings of the inverse's product
    (log2 C − 1) and whether the kernels autotune (on a GPU)."""
    from archc.backends.triton.autotune import tuning

    c = max(16, min(64, _pow2(chunk)))
    return {"K": key, "V": value, "BK": max(16, _pow2(key)), "BV": max(16, _pow2(value)), "C": c,
            "SQUARINGS": c.bit_length() - 2, "AUTOTUNE": tuning()}
