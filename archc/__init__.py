"""archc: a declarative compiler for neural sequence-model architectures.

The public API is a set of thin wrappers over the stages (docs/architecture.md):

    >>> import archc
    >>> prog = archc.load("specs/llama-tiny.arch")       # parse + lower: a checked Graph
    >>> report = archc.summary("specs/llama-tiny.arch", seq=4096)
    >>> report.total.params
    3819776

Imports are lazy so that `archc check` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from archc.version import __version__

if TYPE_CHECKING:
    from archc.dsl.ast import Module
    from archc.errors import Diagnostic
    from archc.frontend import Program
    from archc.passes.estimate_cost import CostReport


def parse(text: str, path: str = "<string>") -> Module:
    """Source text -> AST (raises `archc.errors.ArchError`)."""
    from archc.dsl.parser import parse as _parse

    return _parse(text, path)


def load(path: str, **limits: Any) -> Program:
    """Spec file -> checked `Program` (graph, warnings, sources). Raises `ArchError`."""
    from archc.frontend import load as _load
    from archc.frontend.lower import Limits

    return _load(path, Limits(**limits))


def loads(text: str, path: str = "<string>", **limits: Any) -> Program:
    from archc.frontend import loads as _loads
    from archc.frontend.lower import Limits

    return _loads(text, path, Limits(**limits))


def check(path: str) -> list[Diagnostic]:
    """Every diagnostic (errors and warnings) for a spec file; empty when it is clean."""
    from archc.errors import ArchError

    try:
        return list(load(path).warnings)
    except ArchError as e:
        return list(e.diagnostics)


def summary(path: str, seq: int = 2048, batch: int = 1, dtype: str = "bf16") -> CostReport:
    """Cost report of a spec: parameters, FLOPs/token, activation and state memory."""
    from archc.ir.cost import CostCtx
    from archc.passes.estimate_cost import estimate_cost

    return estimate_cost(load(path).graph, CostCtx(seq=seq, batch=batch, dtype=dtype))


def build(spec: Any, seed: int = 0, device: Any = "cpu", dtype: Any = None) -> Any:
    """Spec path (or lowered `Graph`) -> an initialized, trainable `ArchModel` (`nn.Module`).
    Needs the torch extra. See docs/backends.md."""
    import torch

    from archc.backends.torch import build as _build

    return _build(spec, seed=seed, device=device, dtype=dtype or torch.float32)


def export_onnx(spec: Any, weights: str | None = None, out: str = "export", opset: int | None = None,
                force: bool = False, seed: int = 0) -> Any:
    """Spec path (or lowered `Graph`) -> an ONNX export folder (`model.onnx`, `archc_export.json`);
    returns the path of `model.onnx`. Needs the torch and onnx extras. See docs/onnx.md."""
    from pathlib import Path

    from archc.backends.onnx import DEFAULT_OPSET
    from archc.backends.onnx.export import export_model
    from archc.backends.torch import build as _build
    from archc.backends.torch.checkpoint import load_weights

    model = _build(spec, seed=seed)
    if weights:
        load_weights(model, weights)
    text = Path(spec).read_text() if isinstance(spec, str | Path) else ""
    report = export_model(model, Path(out), text, model.graph.name, weights or f"random init, seed {seed}",
                          opset=opset or DEFAULT_OPSET, force=force)
    return report.folder / "model.onnx"


def fmt(text: str, path: str = "<string>") -> str:
    """Canonical formatting of spec text."""
    from archc.dsl.fmt import format_text

    return format_text(text, path)


__all__ = ["__version__", "build", "check", "export_onnx", "fmt", "load", "loads", "parse", "summary"]
