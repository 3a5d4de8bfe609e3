"""The `archc` command line.

Exit status: 0 success, 1 the spec has errors (or `fmt --check` found unformatted files), 2 bad
usage, 3 internal error (a bug in archc: it is reported as such, never as a traceback unless
ARCHC_DEBUG=1 is set).

argparse rather than Typer: `archc check` must finish in a quarter of `import torch`'s time, and
Typer's import alone is a quarter of that budget. Heavy modules are imported inside commands.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_ERRORS, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


def _color(stream) -> bool:
    return stream.isatty() and os.environ.get("NO_COLOR") is None


def _print_diags(diags: list, sources: dict[str, str], stream=None) -> None:
    from archc.errors import render

    stream = stream or sys.stderr
    for d in diags:
        print(render(d, sources, _color(stream)), file=stream)
        print(file=stream)


def _limits(args: argparse.Namespace):
    from archc.ir.lower import Limits

    return Limits(max_nodes=args.max_nodes, max_params=int(args.max_params), max_layers=args.max_nodes)


def _load(path: str, args: argparse.Namespace, sources: dict[str, str]):
    from archc.frontend import load

    return load(path, _limits(args), sources)


def cmd_check(args: argparse.Namespace) -> int:
    from archc.errors import ArchError

    all_diags = []
    sources: dict[str, str] = {}
    for path in args.files:
        try:
            prog = _load(path, args, sources)
            all_diags.extend(prog.warnings)
        except ArchError as e:
            all_diags.extend(e.diagnostics)
    errors = sum(d.severity == "error" for d in all_diags)
    warnings = len(all_diags) - errors
    failed = errors > 0 or (args.strict and warnings > 0)
    if args.format == "json":
        print(json.dumps({
            "format_version": "1.0", "valid": not failed, "error_count": errors, "warning_count": warnings,
            "diagnostics": [d.to_json() for d in all_diags],
        }, indent=2))
    elif all_diags:
        _print_diags(all_diags, sources)
        print(f"{errors} error(s), {warnings} warning(s)", file=sys.stderr)
    return EXIT_ERRORS if failed else EXIT_OK


def cmd_summary(args: argparse.Namespace) -> int:
    from archc.errors import ArchError
    from archc.ir.cost import CostCtx
    from archc.passes.estimate_cost import estimate_cost

    sources: dict[str, str] = {}
    try:
        prog = _load(args.file, args, sources)
    except ArchError as e:
        _print_diags(e.diagnostics, sources)
        return EXIT_ERRORS
    if prog.warnings:
        _print_diags(prog.warnings, sources)
    ctx = CostCtx(seq=args.seq, batch=args.batch, dtype=args.dtype)
    report = estimate_cost(prog.graph, ctx)
    if args.json:
        print(json.dumps(report.to_json(prog.graph), indent=2))
        return EXIT_OK
    from archc.summary import print_report

    print_report(prog.graph, report, depth=args.depth)
    return EXIT_OK


def cmd_fmt(args: argparse.Namespace) -> int:
    import difflib
    import tempfile

    from archc.dsl.fmt import format_text
    from archc.errors import ArchError, Diagnostic

    changed, status = [], EXIT_OK
    sources: dict[str, str] = {}
    for path in args.files:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            _print_diags([Diagnostic("ARC0001", f"cannot read {path}: {e}")], sources)
            status = EXIT_ERRORS
            continue
        sources[path] = text
        try:
            out = format_text(text, path)
        except ArchError as e:
            _print_diags(e.diagnostics, sources)
            status = EXIT_ERRORS
            continue
        if out != text:
            changed.append(path)
        if args.check:
            continue
        if args.diff:
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), out.splitlines(True), path, path))
        elif args.write:
            if out != text:  # atomic replace: a crash never leaves a half-written spec
                fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(out)
                os.replace(tmp, p)
                print(f"formatted {path}", file=sys.stderr)
        else:
            sys.stdout.write(out)
    if args.check and changed:
        for c in changed:
            print(f"would reformat {c}", file=sys.stderr)
        return EXIT_ERRORS
    return status


def cmd_graph(args: argparse.Namespace) -> int:
    from archc.errors import ArchError, Diagnostic
    from archc.viz import RenderError, graph_to_dot, render_dot

    sources: dict[str, str] = {}
    try:
        prog = _load(args.file, args, sources)
    except ArchError as e:
        _print_diags(e.diagnostics, sources)
        return EXIT_ERRORS
    dot = graph_to_dot(prog.graph)
    fmt = args.format or (Path(args.output).suffix.lstrip(".") if args.output else "dot")
    if fmt not in ("dot", "svg", "png", "pdf"):
        print(f"archc graph: unknown output format {fmt!r} (dot, svg, png, pdf)", file=sys.stderr)
        return EXIT_USAGE
    if fmt == "dot":
        if args.output:
            Path(args.output).write_text(dot)
        else:
            sys.stdout.write(dot)
        return EXIT_OK
    try:
        data = render_dot(dot, fmt)
    except RenderError as e:
        _print_diags([Diagnostic("ARC0801", str(e), None, e.hint)], sources)
        return EXIT_ERRORS
    if args.output:
        Path(args.output).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    from archc.explain import EXPLANATIONS

    code = args.code.upper()
    if code not in EXPLANATIONS:
        print(f"archc explain: no error code {args.code!r}; codes: {', '.join(sorted(EXPLANATIONS))}", file=sys.stderr)
        return EXIT_USAGE
    title, body = EXPLANATIONS[code]
    print(f"{code}: {title}\n\n{body.strip()}")
    return EXIT_OK


def cmd_ops(args: argparse.Namespace) -> int:
    from archc.docs_gen import op_reference
    from archc.ops import REGISTRY

    if args.name:
        if args.name not in REGISTRY:
            from archc.errors import did_you_mean

            print(f"archc ops: no op {args.name!r}. {did_you_mean(args.name, list(REGISTRY)) or ''}", file=sys.stderr)
            return EXIT_USAGE
        print(op_reference(REGISTRY[args.name]))
        return EXIT_OK
    for name, op in sorted(REGISTRY.items(), key=lambda kv: (kv[1].category, kv[0])):
        print(f"{op.category:<10} {name:<22} {op.summary}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from archc import __version__

    p = argparse.ArgumentParser(prog="archc", description="archc: a compiler for sequence-model architectures.")
    p.add_argument("--version", action="version", version=f"archc {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def limits(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--max-params", type=float, default=1e13, help="refuse specs with more parameters (1e13)")
        sp.add_argument("--max-nodes", type=int, default=200_000, help="refuse specs lowering to more nodes (200000)")

    c = sub.add_parser("check", help="parse and check specs; print diagnostics")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("--format", choices=("text", "json"), default="text", help="json: for editors and CI")
    c.add_argument("--strict", action="store_true", help="warnings fail the check too")
    limits(c)
    c.set_defaults(fn=cmd_check)

    s = sub.add_parser("summary", help="parameters, FLOPs, memory per layer and in total")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--seq", type=int, default=2048, help="context length costed (2048)")
    s.add_argument("--batch", type=int, default=1, help="batch size for memory figures (1)")
    s.add_argument("--dtype", choices=("fp32", "bf16", "fp16", "fp8", "int8"), default="bf16")
    s.add_argument("--depth", type=int, default=1, help="1: identical consecutive layers folded into one row; 2: one row per layer")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    limits(s)
    s.set_defaults(fn=cmd_summary)

    f = sub.add_parser("fmt", help="print specs in canonical form (-w rewrites them)")
    f.add_argument("files", nargs="+", metavar="FILE")
    mode = f.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if any file is not formatted")
    mode.add_argument("-w", "--write", action="store_true", help="rewrite the files in place")
    mode.add_argument("--diff", action="store_true", help="print a unified diff")
    f.set_defaults(fn=cmd_fmt)

    g = sub.add_parser("graph", help="draw the IR (DOT; SVG/PNG with Graphviz)")
    g.add_argument("file", metavar="FILE")
    g.add_argument("-o", "--output", help="output file; the format follows its suffix")
    g.add_argument("--format", choices=("dot", "svg", "png", "pdf"))
    limits(g)
    g.set_defaults(fn=cmd_graph)

    e = sub.add_parser("explain", help="the long explanation of an error code")
    e.add_argument("code")
    e.set_defaults(fn=cmd_explain)

    o = sub.add_parser("ops", help="list the op catalog, or show one op's schema")
    o.add_argument("name", nargs="?")
    o.set_defaults(fn=cmd_ops)

    from archc.cli_torch import add_parsers

    add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "fn", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as e:  # a bug in archc, never the user's fault
        if os.environ.get("ARCHC_DEBUG"):
            raise
        print(f"internal error[ARC9999]: {type(e).__name__}: {e}\n"
              "  = note: this is a bug in archc; please report it with the spec that triggered it\n"
              "  = help: set ARCHC_DEBUG=1 for the traceback", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
