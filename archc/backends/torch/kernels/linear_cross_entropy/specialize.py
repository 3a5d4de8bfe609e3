"""What the cross-entropy kernel is specialized to (importable without Triton)."""

from __future__ import annotations

from typing import Any


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def params(vocab: int, softcap: float | None) -> dict[str, Any]:
    """The vocabulary, the block of logits a loop step reads (≤ 4,096), and the soft cap (0: none)."""
    return {"V": vocab, "BLOCK": min(4096, _pow2(vocab)), "SOFTCAP": softcap or 0}


def chunk_rows(rows: int, vocab: int, width: int) -> int:
    """Rows of logits formed at once: about as many values as the hidden states hold
    (Liger-Kernel's rule), a power of two, at least one."""
    per = max(1, -(-vocab // width))  # vocabulary / width: how much larger a logits row is
    return max(1, min(rows, _pow2(-(-rows // per))))
