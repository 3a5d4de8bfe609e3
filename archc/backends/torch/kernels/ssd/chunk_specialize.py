"""What the chunked decay kernels are specialized to (importable without Triton)."""

from __future__ import annotations

from typing import Any

#: the widest key a program holds ([C, K] tiles and a [K, BV] state in registers)
MAX_KEY = 256


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def params(key: int, value: int, chunk: int) -> dict[str, Any]:
    """Key and value widths, their blocks (≥ 16, what `tl.dot` takes on a GPU; value blocks ≤ 64),
    and the kernel's chunk: the spec's rounded to a power of two in [16, 64] (the chunk only
    regroups the same sum; flash-linear-attention uses 64); and whether the kernels autotune (on a GPU)."""
    from archc.backends.triton.autotune import tuning

    return {"K": key, "V": value, "BK": max(16, _pow2(key)), "BV": max(16, min(64, _pow2(value))),
            "C": max(16, min(64, _pow2(chunk))), "AUTOTUNE": tuning()}
