"""The `archc` command line.

Exit status: 0 success, 1 the spec has errors (or `fmt --check` found unformatted files), 2 bad
usage, 3 internal error (a bug in archc: it is reported as such, never as a traceback unless
ARCHC_DEBUG=1 is set).

argparse rather than Typer: `archc check` must finish in a small fraction of `import torch`'s time,
and Typer's import alone is a quarter of that budget. Heavy modules are imported inside commands:
`frontend.py` holds the commands that never need torch, `model.py` those that do (build, train, generate), `common.py`
what they share.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from archc.cli import frontend
from archc.cli.common import EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, add_limit_flags
from archc.cli.flags import ArgumentParser, count, output


def build_parser() -> argparse.ArgumentParser:
    from archc.cli import bench as bench_commands
    from archc.cli import compress as compress_commands
    from archc.cli import deploy as deploy_commands
    from archc.cli import hf as hf_commands
    from archc.cli import kernels as kernel_commands
    from archc.cli import model as model_commands
    from archc.cli import parallel as parallel_commands
    from archc.version import __version__

    p = ArgumentParser(prog="archc", description="archc: a compiler for sequence-model architectures.")
    p.add_argument("--version", action="version", version=f"archc {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("check", help="parse and check specs; print diagnostics")
    c.add_argument("files", nargs="+", metavar="FILE", help="spec files (.arch)")
    c.add_argument("--format", choices=("text", "json"), default="text", help="json: for editors and CI")
    c.add_argument("--strict", action="store_true", help="warnings fail the check too")
    add_limit_flags(c)
    c.set_defaults(fn=frontend.cmd_check)

    s = sub.add_parser("summary", help="parameters, FLOPs, memory per layer and in total")
    s.add_argument("file", metavar="FILE", help="spec file (.arch)")
    s.add_argument("--seq", type=count(1), default=2048, help="context length costed (2048)")
    s.add_argument("--batch", type=count(1), default=1, help="batch size for memory figures (1)")
    s.add_argument("--dtype", choices=("fp32", "bf16", "fp16", "fp8", "int8"), default="bf16",
                   help="storage dtype of weights, activations and KV caches (bf16)")
    s.add_argument("--depth", type=count(1, 2), default=1, help="1: identical consecutive layers folded into one row; 2: one row per layer")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    add_limit_flags(s)
    s.set_defaults(fn=frontend.cmd_summary)

    f = sub.add_parser("fmt", help="print specs in canonical form (-w rewrites them)")
    f.add_argument("files", nargs="+", metavar="FILE", help="spec files (.arch)")
    mode = f.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if any file is not formatted")
    mode.add_argument("-w", "--write", action="store_true", help="rewrite the files in place")
    mode.add_argument("--diff", action="store_true", help="print a unified diff")
    f.set_defaults(fn=frontend.cmd_fmt)

    g = sub.add_parser("graph", help="the IR as text, or drawn (DOT; SVG/PNG/PDF with Graphviz)")
    g.add_argument("file", metavar="FILE", help="spec file (.arch)")
    g.add_argument("-o", "--output", type=output,
                   help="output file; the format follows its suffix (.txt, .dot, .svg, ...)")
    g.add_argument("--force", action="store_true", help="replace an existing output file")
    g.add_argument("--format", choices=("text", "dot", "svg", "png", "pdf"),
                   help="text: the IR's canonical text form; default: from the output's suffix, else dot")
    add_limit_flags(g)
    g.set_defaults(fn=frontend.cmd_graph)

    ps = sub.add_parser("passes", help="run IR passes and pipelines; dump the IR after any of them")
    ps.add_argument("file", metavar="FILE", nargs="?", help="spec file (.arch); not needed with --list")
    ps.add_argument("--pipeline", default="summary",
                    help="a named pipeline (see --list) or passes separated by commas (summary)")
    ps.add_argument("--dump-after", action="append", default=[], metavar="PASS",
                    help="print the IR text after PASS (repeatable; `all` after every pass)")
    ps.add_argument("-o", "--output", metavar="DIR", type=output,
                    help="write each dump to DIR/<model>.<n>-<pass>.txt instead of stdout")
    ps.add_argument("--force", action="store_true", help="replace dumps of an earlier run in DIR")
    ps.add_argument("--seq", type=count(1), default=2048, help="context length the cost pass uses (2048)")
    ps.add_argument("--batch", type=count(1), default=1, help="batch the cost pass uses (1)")
    ps.add_argument("--dtype", choices=("fp32", "bf16", "fp16", "fp8", "int8"), default="bf16",
                    help="dtype the cost pass uses (bf16)")
    ps.add_argument("--list", action="store_true", help="list the passes and the pipelines, then exit")
    add_limit_flags(ps)
    ps.set_defaults(fn=frontend.cmd_passes)

    e = sub.add_parser("explain", help="the long explanation of an error code")
    e.add_argument("code", help="an error code such as ARC0303")
    e.set_defaults(fn=frontend.cmd_explain)

    o = sub.add_parser("ops", help="list the op catalog, or show one op's schema")
    o.add_argument("name", nargs="?", help="an op name (e.g. attention); omit to list every op")
    o.add_argument("--markdown", action="store_true", help="the entry as in docs/ops.md")
    o.set_defaults(fn=frontend.cmd_ops)

    model_commands.add_parsers(sub)
    deploy_commands.add_parsers(sub)
    compress_commands.add_parsers(sub)
    hf_commands.add_parsers(sub)
    parallel_commands.add_parsers(sub)
    kernel_commands.add_parsers(sub)
    bench_commands.add_parsers(sub)
    return p


def _forget_unhandled_keyboard_interrupt() -> None:
    """Let `python -m archc` exit with the code `main` returns after a Ctrl-C it handled.

    CPython (3.11, 3.12) marks the interpreter when a KeyboardInterrupt leaves code run from a
    string (`exec`/`eval` of source: `dataclasses` makes every dataclass's methods so, and the
    torch and onnx imports an export does run hundreds), even if a caller catches it; under `-m`,
    `Py_RunMain` then ends the process by SIGINT instead of with our 130 (measured: 3 in 24
    interrupted exports). The mark is cleared at the start of every string evaluation, so one
    harmless one clears it; it runs only after the interrupt was caught, so it cannot hide one
    that was not."""
    exec("pass", {})


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed: for "continue with ..." hints
    if not getattr(args, "fn", None):
        parser.print_help()
        return EXIT_USAGE
    from archc.files.output import sigterm_raises, temp_files_in_transactions

    try:
        # SIGTERM cleans up as Ctrl-C does: nothing is left half-written; temporary files live in
        # the output's transaction, not the system temp dir
        with sigterm_raises(), temp_files_in_transactions():
            return args.fn(args)
    except KeyboardInterrupt as e:
        _forget_unhandled_keyboard_interrupt()
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"archc: interrupted ({signal.Signals(signum).name}); nothing was left half-written",
              file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:
        return EXIT_OK
    except Exception as e:  # a bug in archc, never the user's fault
        if os.environ.get("ARCHC_DEBUG"):
            raise
        print(f"internal error[ARC9999]: {type(e).__name__}: {e}\n"
              "  = note: this is a bug in archc; please report it with the spec that triggered it\n"
              "  = help: set ARCHC_DEBUG=1 for the traceback", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        if argv is None:  # the process's own command: its work is done (or reported), so a Ctrl-C
            # during the interpreter's shutdown would only print a traceback from a finalizer
            signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
