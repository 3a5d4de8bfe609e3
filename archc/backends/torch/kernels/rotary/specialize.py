"""What the rotary kernel is specialized to (importable without Triton)."""

from __future__ import annotations

from typing import Any


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def params(head_dim: int, rot_dim: int, per_batch: bool) -> dict[str, Any]:
    """The template's parameters: the head width, the rotated features (even), blocks for half of
    them and for the rest, and whether each sequence has its own table (per-sequence positions)."""
    return {"HD": head_dim, "ROT": rot_dim, "BLOCK": _pow2(rot_dim // 2), "PASS_BLOCK": _pow2(max(1, head_dim - rot_dim)),
            "PER_BATCH": per_batch}
