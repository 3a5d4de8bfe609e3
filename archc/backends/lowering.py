"""The lowering table: (op, backend) → implementation, as JAX's `mlir.register_lowering`.

Each backend implements ops in family files that mirror the op records' one to one:
`archc/backends/<backend>/ops/<family>.py` implements what `archc/ops/<family>.py` registers
(`tests/backends/test_lowering.py` checks the mirror and that every layer op has a torch
implementation). A family file decorates its implementations with
`@register_lowering("<backend>", "<op>", ...)`; `lowerings(backend)` imports the backend's family
files by file name on first use, so adding a family is adding a file on each side, and a backend
that lacks an op simply has no entry (the builder reports it at the op's `.arch` line).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

_TABLE: dict[tuple[str, str], Any] = {}
_LOADED: set[str] = set()
#: Where a backend's family files live, when not in `archc/backends/<backend>/ops/`: `ort`
#: (onnxruntime's fused operators) is a target of the ONNX backend.
_PACKAGES = {"ort": "archc.backends.onnx.ort"}


def register_lowering(backend: str, *ops: str) -> Callable[[Any], Any]:
    """Register the decorated object as `backend`'s implementation of each of `ops`."""

    def deco(impl: Any) -> Any:
        for op in ops:
            assert (op, backend) not in _TABLE, f"{backend} lowering of {op} registered twice"
            _TABLE[op, backend] = impl
        return impl

    return deco


def lowerings(backend: str) -> dict[str, Any]:
    """Every op `backend` implements, by op name (imports its family files on first use)."""
    if backend not in _LOADED:
        package = importlib.import_module(_PACKAGES.get(backend, f"archc.backends.{backend}.ops"))
        for mod in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{mod.name}")
        _LOADED.add(backend)
    return {op: impl for (op, b), impl in _TABLE.items() if b == backend}


def lowering(op: str, backend: str) -> Any | None:
    """`backend`'s implementation of `op`, or None where it has none."""
    return lowerings(backend).get(op)
