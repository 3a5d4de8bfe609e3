"""What the recurrent-step kernel is specialized to (importable without Triton)."""

from __future__ import annotations

from typing import Any

#: the widest key a program holds (its state slice is [K, BV] fp32 in registers)
MAX_KEY = 256
#: each rule's reference, named in the rendered file
REFERENCES = {"decay": "archc/backends/torch/kernels/ssd/naive.py (the recurrence token by token)",
              "delta": "archc/backends/torch/kernels/gated_delta_rule/step.py",
              "wkv": "archc/backends/torch/kernels/wkv6/step.py",
              "mlstm": "archc/backends/torch/kernels/mlstm/step.py"}


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def params(rule: str, key: int, value: int, v_major: bool = False, eps: float = 1e-6) -> dict[str, Any]:
    """The template's parameters: the rule, key and value widths, their power-of-two blocks (value
    blocks of at most 64, so a wide head spreads over programs), the state's layout, and whether
    it autotunes its warps (on a GPU; `archc.backends.triton.autotune`)."""
    from archc.backends.triton.autotune import tuning

    return {"RULE": rule, "K": key, "V": value, "BK": _pow2(key), "BV": min(64, _pow2(value)), "V_MAJOR": v_major,
            "REFERENCE": REFERENCES[rule], "AUTOTUNE": tuning(), **({"EPS": eps} if rule == "mlstm" else {})}
