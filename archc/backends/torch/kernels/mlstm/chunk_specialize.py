"""What the mLSTM chunk kernels are specialized to (importable without Triton)."""

from __future__ import annotations

from typing import Any

#: the widest key one program holds ([C, K] tiles and a [K, BV] memory slice in registers)
MAX_KEY = 256
#: ε of h = num / (max(|den|, e^{−m}) + ε), as `mlstm_scan` and xLSTM's kernels
EPS = 1e-6


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def params(key: int, value: int, chunk: int) -> dict[str, Any]:
    """Key and value widths and their blocks (≥ 16, what `tl.dot` takes on a GPU; value blocks
    ≤ 64), the chunk (rounded to a power of two in [16, 64]: it only regroups the same sums), ε,
    and whether the kernels autotune (on a GPU)."""
    from archc.backends.triton.autotune import tuning

    return {"K": key, "V": value, "BK": max(16, _pow2(key)), "BV": max(16, min(64, _pow2(value))),
            "C": max(16, min(64, _pow2(chunk))), "EPS": EPS, "AUTOTUNE": tuning()}
