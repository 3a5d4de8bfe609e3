"""What every `archc` command shares: exit codes, diagnostics on stderr, loading a spec with the
resource limits the flags set."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

EXIT_OK, EXIT_ERRORS, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


class CommandError(Exception):
    """A diagnostic a command raises; `status` is the exit status it ends with."""

    def __init__(self, diag, status: int = EXIT_ERRORS) -> None:
        super().__init__(diag.message)
        self.diag = diag
        self.status = status


def _fail(code: str, message: str, hint: str | None = None, span=None, usage: bool = False) -> CommandError:
    """A diagnostic for the user; `usage` for a malformed option (exit status 2, not 1)."""
    from archc.errors import Diagnostic

    return CommandError(Diagnostic(code, message, span, hint), EXIT_USAGE if usage else EXIT_ERRORS)


def color(stream) -> bool:
    return stream.isatty() and os.environ.get("NO_COLOR") is None


def print_diags(diags: list, sources: dict[str, str], stream=None) -> None:
    from archc.errors import render

    stream = stream or sys.stderr
    for d in diags:
        if d.hint is None and d.severity == "error" and d.code != "ARC9999":
            d = dataclasses.replace(d, hint=f"`archc explain {d.code}` says more")
        print(render(d, sources, color(stream)), file=stream)
        print(file=stream)


def limits_of(args: argparse.Namespace):
    from archc.frontend.lower import Limits

    return Limits(max_nodes=args.max_nodes, max_params=int(args.max_params), max_layers=args.max_layers)


def load_spec(path: str, args: argparse.Namespace, sources: dict[str, str]):
    from archc.frontend import load

    return load(path, limits_of(args), sources)


def add_limit_flags(sp: argparse.ArgumentParser) -> None:
    from archc.cli.flags import count, positive

    sp.add_argument("--max-params", type=positive, default=1e13, help="refuse specs with more parameters (1e13)")
    sp.add_argument("--max-nodes", type=count(1), default=200_000,
                    help="refuse specs lowering to more nodes (200000)")
    sp.add_argument("--max-layers", type=count(1), default=100_000,
                    help="refuse a repeat/pattern of more layers (100000)")


def load_or_report(path: str, args: argparse.Namespace, sources: dict[str, str]):
    """The checked program of a spec, or None after printing its diagnostics (the caller exits 1)."""
    from archc.errors import ArchError

    try:
        return load_spec(path, args, sources)
    except ArchError as e:
        print_diags(e.diagnostics, sources)
        return None
