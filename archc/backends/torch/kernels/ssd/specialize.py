"""What the decay-step kernel is specialized to (importable without Triton)."""

from __future__ import annotations

from typing import Any

#: the widest key a program holds (the state slice is [K, BV] fp32 in registers)
MAX_KEY = 256


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def params(key: int, value: int, v_major: bool) -> dict[str, Any]:
    """The template's parameters: key and value widths, their power-of-two blocks (value blocks
    of at most 64, so a wide head spreads over programs), and the state's layout."""
    return {"K": key, "V": value, "BK": _pow2(key), "BV": min(64, _pow2(value)), "V_MAJOR": v_major}
