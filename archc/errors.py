"""Diagnostics: the one way archc reports a problem in a spec.

Every stage collects `Diagnostic`s instead of stopping at the first problem, and raises
`ArchError` (which carries all of them) only at the end of the stage. The CLI renders them
rustc-style (code, message, file:line:col, the source line with a caret, a hint) or as JSON
in the schema of `terraform validate -json`. Codes are stable and documented in
docs/errors.md; `archc explain CODE` prints the long form from `archc/explain.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Span:
    """A region of a source file, 1-based lines and columns (end is exclusive)."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    code: str
    message: str
    span: Span | None = None
    hint: str | None = None
    severity: Severity = "error"
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict:
        rng = None
        if self.span is not None:
            s = self.span
            rng = {
                "filename": s.file,
                "start": {"line": s.line, "column": s.col},
                "end": {"line": s.end_line, "column": s.end_col},
            }
        return {
            "severity": self.severity,
            "code": self.code,
            "summary": self.message,
            "detail": "\n".join(n for n in (*self.notes, f"help: {self.hint}" if self.hint else "") if n),
            "range": rng,
        }


@dataclass
class ArchError(Exception):
    """Raised by a stage that found errors; carries every diagnostic it collected."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(f"{d.span or '<unknown>'}: {d.code}: {d.message}" for d in self.diagnostics)


class Collector:
    """Accumulates diagnostics for a stage; `raise_if_errors` ends the stage."""

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []

    def error(self, code: str, message: str, span: Span | None = None, hint: str | None = None) -> None:
        self.items.append(Diagnostic(code, message, span, hint))

    def warning(self, code: str, message: str, span: Span | None = None, hint: str | None = None) -> None:
        self.items.append(Diagnostic(code, message, span, hint, severity="warning"))

    def extend(self, diags: list[Diagnostic]) -> None:
        self.items.extend(diags)

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.items)

    def raise_if_errors(self) -> None:
        if self.has_errors:
            raise ArchError(self.items)


def did_you_mean(name: str, candidates: list[str] | set[str] | tuple[str, ...]) -> str | None:
    """A "did you mean" hint from the closest known names (difflib, like Python's own)."""
    import difflib

    close = difflib.get_close_matches(name, sorted(candidates), n=3, cutoff=0.6)
    if not close:
        return None
    return "did you mean " + " or ".join(f"`{c}`" for c in close) + "?"


def render(diag: Diagnostic, sources: dict[str, str], color: bool = False) -> str:
    """rustc-style text: `error[ARC0101]: msg`, ` --> file:L:C`, the line, a caret, help."""
    red, yellow, blue, bold, reset = ("\033[31m", "\033[33m", "\033[34m", "\033[1m", "\033[0m") if color else ("",) * 5
    sev_color = red if diag.severity == "error" else yellow
    out = [f"{sev_color}{bold}{diag.severity}[{diag.code}]{reset}{bold}: {diag.message}{reset}"]
    if diag.span is not None:
        s = diag.span
        out.append(f"  {blue}-->{reset} {s.file}:{s.line}:{s.col}")
        text = sources.get(s.file)
        if text is not None:
            lines = text.splitlines()
            if 1 <= s.line <= len(lines):
                src = lines[s.line - 1]
                shown = src[:200]
                width = max(1, (s.end_col - s.col) if s.end_line == s.line else len(src) - s.col + 1)
                width = min(width, max(1, len(shown) - s.col + 1))
                gutter = " " * len(str(s.line))
                out.append(f"{blue}{gutter} |{reset}")
                out.append(f"{blue}{s.line} |{reset} {shown}")
                out.append(f"{blue}{gutter} |{reset} {' ' * (s.col - 1)}{sev_color}{'^' * width}{reset}")
    for n in diag.notes:
        out.append(f"  = note: {n}")
    if diag.hint:
        out.append(f"  = help: {diag.hint}")
    return "\n".join(out)
