"""What RWKV-6's chunk kernels are specialized to (importable without Triton)."""

from __future__ import annotations

from typing import Any

#: the widest key one program holds: the chunk's [C, C, K] pairwise decays stay in registers
MAX_KEY = 128
#: tokens per chunk, as the torch form's (`chunk.WKV6_CHUNK`): the pairwise tile grows with C²
CHUNK = 16


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def params(key: int, value: int) -> dict[str, Any]:
    """Key and value widths and their blocks (≥ 16, what `tl.dot` takes on a GPU; value blocks
    ≤ 64), the chunk, and whether the kernels autotune (on a GPU)."""
    from archc.backends.triton.autotune import tuning

    return {"K": key, "V": value, "BK": max(16, _pow2(key)), "BV": max(16, min(64, _pow2(value))), "C": CHUNK,
            "AUTOTUNE": tuning()}
