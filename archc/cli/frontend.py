"""The commands of the front end: `check`, `summary`, `fmt`, `graph`, `passes`, `explain`, `ops`.
None of them imports torch."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from archc.cli.common import EXIT_ERRORS, EXIT_OK, EXIT_USAGE, load_or_report, load_spec, print_diags

if TYPE_CHECKING:
    from archc.ir.graph import Graph


def cmd_check(args: argparse.Namespace) -> int:
    from archc.errors import ArchError

    all_diags = []
    sources: dict[str, str] = {}
    for path in args.files:
        try:
            prog = load_spec(path, args, sources)
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
        print_diags(all_diags, sources)
        print(f"{errors} error(s), {warnings} warning(s)", file=sys.stderr)
    return EXIT_ERRORS if failed else EXIT_OK


def cmd_summary(args: argparse.Namespace) -> int:
    from archc.ir.cost import CostCtx
    from archc.passes.estimate_cost import estimate_cost

    sources: dict[str, str] = {}
    prog = load_or_report(args.file, args, sources)
    if prog is None:
        return EXIT_ERRORS
    if prog.warnings:
        print_diags(prog.warnings, sources)
    ctx = CostCtx(seq=args.seq, batch=args.batch, dtype=args.dtype)
    report = estimate_cost(prog.graph, ctx)
    if args.json:
        print(json.dumps(report.to_json(prog.graph), indent=2))
        return EXIT_OK
    from archc.cost_table import print_report

    print_report(prog.graph, report, depth=args.depth)
    return EXIT_OK


def cmd_fmt(args: argparse.Namespace) -> int:
    import difflib

    from archc.dsl.fmt import format_text
    from archc.errors import ArchError
    from archc.frontend import read_spec

    changed, status = [], EXIT_OK
    sources: dict[str, str] = {}
    for path in args.files:
        p = Path(path)
        try:
            text = read_spec(p)
        except ArchError as e:
            print_diags(e.diagnostics, sources)
            status = EXIT_ERRORS
            continue
        sources[path] = text
        try:
            out = format_text(text, path)
        except ArchError as e:
            print_diags(e.diagnostics, sources)
            status = EXIT_ERRORS
            continue
        if out != text:
            changed.append(path)
        if args.check:
            continue
        if args.diff:
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), out.splitlines(True), path, path))
        elif args.write:
            if out != text:  # replaced whole (a crash never leaves a half-written spec), never through a link
                if _write_file(path, out.encode(), True, sources) != EXIT_OK:
                    status = EXIT_ERRORS
                    continue
                print(f"formatted {path}", file=sys.stderr)
        else:
            sys.stdout.write(out)
    if args.check and changed:
        for c in changed:
            print(f"would reformat {c}", file=sys.stderr)
        return EXIT_ERRORS
    return status


def cmd_graph(args: argparse.Namespace) -> int:
    from archc.errors import Diagnostic
    from archc.viz import RenderError, graph_to_dot, render_dot

    sources: dict[str, str] = {}
    prog = load_or_report(args.file, args, sources)
    if prog is None:
        return EXIT_ERRORS
    fmt = args.format or (Path(args.output).suffix.lstrip(".") if args.output else "dot")
    fmt = "text" if fmt == "txt" else fmt
    if fmt not in ("text", "dot", "svg", "png", "pdf"):
        print_diags([Diagnostic("ARC1307", f"-o {args.output}: no output format for the suffix {fmt or '(none)'!r}",
                                None, "end the file name in .txt, .dot, .svg, .png or .pdf, or pass --format")], sources)
        return EXIT_USAGE
    if fmt == "text":
        data = (prog.graph.to_text() + "\n").encode()
    elif fmt == "dot":
        data = graph_to_dot(prog.graph).encode()
    else:
        try:
            data = render_dot(graph_to_dot(prog.graph), fmt)
        except RenderError as e:
            print_diags([Diagnostic("ARC0801", str(e), None, e.hint)], sources)
            return EXIT_ERRORS
    if not args.output:
        sys.stdout.buffer.write(data)
        return EXIT_OK
    return _write_file(args.output, data, args.force, sources)


def _write_file(path: str, data: bytes, force: bool, sources: dict[str, str]) -> int:
    """`data` to `path` whole or not at all (`archc.files.output.output_file`); an existing file
    only with --force."""
    from archc.errors import Diagnostic
    from archc.files import FileError
    from archc.files.output import output_file

    try:
        with output_file(path, force) as tmp:
            tmp.write_bytes(data)
    except FileError as e:
        print_diags([Diagnostic(e.code, e.message, None, e.hint)], sources)
        return EXIT_USAGE if e.usage else EXIT_ERRORS
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
    from archc.docs_gen import op_reference, op_text
    from archc.ops import REGISTRY

    if args.name:
        if args.name not in REGISTRY:
            from archc.errors import did_you_mean

            print(f"archc ops: no op {args.name!r}. {did_you_mean(args.name, list(REGISTRY)) or ''}", file=sys.stderr)
            return EXIT_USAGE
        print(op_reference(REGISTRY[args.name]) if args.markdown else op_text(REGISTRY[args.name]))
        return EXIT_OK
    for name, op in sorted(REGISTRY.items(), key=lambda kv: (REGISTRY.family[kv[0]], kv[0])):
        print(f"{REGISTRY.family[name]:<17} {name:<22} {op.summary}")
    return EXIT_OK




def _write_dumps(folder: str, model: str, dumps: dict[str, str], force: bool, sources: dict[str, str]) -> int:
    """Each dump to `folder/<model>.<n>-<pass>.txt`, all committed together; files of an earlier
    run of the same names are replaced only with --force, anything else in the folder is kept."""
    from archc.errors import Diagnostic
    from archc.files import FileError
    from archc.files.output import Owned, output_folder, write_text

    names = [f"{model}.{i + 1}-{name}.txt" for i, name in enumerate(dumps)]
    try:
        with output_folder(folder, Owned(tuple(names), what="IR dump"), force) as txn:
            for name, text in zip(names, dumps.values(), strict=True):
                write_text(txn.stage / name, text + "\n")
    except FileError as e:
        print_diags([Diagnostic(e.code, e.message, None, e.hint)], sources)
        return EXIT_USAGE if e.usage else EXIT_ERRORS
    for name in names:
        print(f"wrote {Path(folder) / name}", file=sys.stderr)
    return EXIT_OK


def _print_fusion_report(graph: Graph) -> None:
    """What the pipeline's fusions made, node by node, and what matched but could not be fused."""
    from archc.passes.rewrite import fusion_report

    fused, refused = fusion_report(graph)
    if not fused and not refused:
        return
    counts: dict[str, int] = {}
    for f in fused:
        counts[f.rewrite] = counts.get(f.rewrite, 0) + 1
    print("fused: " + ", ".join(f"{k} ×{v}" for k, v in counts.items()) if counts else "fused: nothing",
          file=sys.stderr)
    for f in fused:
        print(f"  {f.node:<28} {f.op:<22} from {f.detail}", file=sys.stderr)
    for f in refused:
        print(f"  not fused: {f.node:<17} {f.rewrite}: {f.detail}", file=sys.stderr)


def cmd_passes(args: argparse.Namespace) -> int:
    from archc.errors import Diagnostic
    from archc.ir.cost import CostCtx
    from archc.passes.manager import PIPELINES, PassError, passes, resolve, run

    if args.list:
        for name, p in sorted(passes().items()):
            print(f"pass      {name:<22} {p.summary}")
        for name, names in PIPELINES.items():
            print(f"pipeline  {name:<22} {' -> '.join(names)}")
        return EXIT_OK
    if not args.file:
        print("archc passes: give a spec file (or --list)", file=sys.stderr)
        return EXIT_USAGE
    pipeline = args.pipeline if args.pipeline in PIPELINES else [n.strip() for n in args.pipeline.split(",") if n.strip()]
    sources: dict[str, str] = {}
    prog = load_or_report(args.file, args, sources)
    if prog is None:
        return EXIT_ERRORS
    try:
        wants_cost = any(p.name == "estimate_cost" for p in resolve(pipeline))
        options = {"estimate_cost": CostCtx(seq=args.seq, batch=args.batch, dtype=args.dtype)} if wants_cost else {}
        result = run(prog.graph, pipeline, options, dump_after=args.dump_after)
    except ValueError as e:
        print(f"archc passes: {e}", file=sys.stderr)
        return EXIT_USAGE
    except PassError as e:
        ran = f" (after {', '.join(e.before)})" if e.before else ""
        print_diags([Diagnostic(e.code, f"pass `{e.pass_name}`{ran} failed at node `{e.node}`: {e.message}"
                                if e.node else f"pass `{e.pass_name}`{ran} failed: {e.message}", e.span, e.hint)],
                    sources)
        return EXIT_ERRORS
    for r in result.records:
        print(f"{r.name:<22} {r.seconds * 1e3:8.2f} ms  nodes {r.nodes_before} -> {r.nodes_after}", file=sys.stderr)
    _print_fusion_report(result.graph)
    if args.output:
        return _write_dumps(args.output, prog.graph.name, result.dumps, args.force, sources)
    for name, text in result.dumps.items():
        print(f"# after {name}")
        print(text)
    return EXIT_OK
