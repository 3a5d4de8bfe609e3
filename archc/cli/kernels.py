"""`archc kernels`: which node of a spec runs which Triton kernel, why not where not, and the
rendered kernel files (docs/kernels.md)."""

from __future__ import annotations

import argparse
import json

from archc.cli.common import EXIT_ERRORS, EXIT_OK, EXIT_USAGE, add_limit_flags, load_or_report, print_diags
from archc.cli.flags import output


def cmd_kernels(args: argparse.Namespace) -> int:
    from archc.backends.torch.kernels.select import KERNELS, choose
    from archc.backends.triton import KernelError
    from archc.errors import Diagnostic
    from archc.passes.manager import run

    sources: dict[str, str] = {}
    prog = load_or_report(args.file, args, sources)
    if prog is None:
        return EXIT_ERRORS
    graph = run(prog.graph, args.pipeline).graph
    try:
        choices = choose(graph, args.kernels, args.device)
    except KernelError as e:
        print_diags([Diagnostic("ARC1701", str(e), None, "use --kernels auto (torch where Triton cannot run)")],
                    sources)
        return EXIT_ERRORS
    # what each node would be specialized to, whether or not Triton runs here (`--emit` writes it)
    rendered = [c for c in choose(graph, "triton", "cuda") if c.template] if _renderable() else []
    if args.emit:
        return _emit(args, rendered, sources)
    if args.json:
        print(json.dumps({"model": graph.name, "kernels": args.kernels, "device": args.device, "nodes": [
            {"node": c.node, "op": c.op, "family": c.family, "kernel": c.template, "why": c.why,
             "reference": KERNELS[c.family].reference, "params": c.params}
            for c in choices]}, indent=2))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{graph.name}: kernels={args.kernels} on {args.device} ({args.pipeline})",
                  title_justify="left")
    for col in ("node", "op", "runs", "why"):
        table.add_column(col)
    for c in choices:
        table.add_row(c.node, c.op, f"triton:{c.template}" if c.template else f"torch (not {c.family})", c.why)
    console = Console()
    console.print(table)
    families = sorted({f.template for f in KERNELS.values()})
    without = sorted({n.op for n in graph.nodes.values()} - {c.op for c in choices})
    console.print(f"kernel families: {', '.join(families)}; ops here without one (torch forms): {', '.join(without)}")
    return EXIT_OK


def _renderable() -> bool:
    try:
        import jinja2  # noqa: F401
    except ImportError:
        return False
    return True


def _emit(args: argparse.Namespace, rendered: dict, sources: dict[str, str]) -> int:
    """Write one readable file per distinct specialization, and `kernels.json` mapping nodes to them."""
    from archc.backends.triton.render import file_name, source
    from archc.errors import Diagnostic
    from archc.files import FileError
    from archc.files.output import Owned, output_folder

    if not rendered:
        print_diags([Diagnostic("ARC1701", "--emit renders the kernels with jinja2, which is not installed", None,
                                "pip install 'archc[triton]'")], sources)
        return EXIT_ERRORS
    files: dict[str, dict[str, str]] = {}  # node -> {family: file}
    for c in rendered:
        files.setdefault(c.node, {})[c.template] = file_name(c.template, **c.params)
    names = sorted({f for per_node in files.values() for f in per_node.values()})
    owned = Owned(files=(*names, "kernels.json"), marker="kernels.json", what="kernel sources")
    try:
        with output_folder(args.emit, owned, args.force) as txn:
            for c in rendered:
                (txn.stage / files[c.node][c.template]).write_text(source(c.template, **c.params))
            (txn.stage / "kernels.json").write_text(json.dumps({"nodes": files}, indent=2) + "\n")
    except FileError as e:
        print_diags([Diagnostic(e.code, e.message, None, e.hint)], sources)
        return EXIT_USAGE if e.usage else EXIT_ERRORS
    print(f"wrote {len(names)} kernel files for {len(files)} nodes to {args.emit}")
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser("kernels", help="which node runs which Triton kernel, and the rendered kernel files")
    k.add_argument("file", metavar="FILE", help="spec file (.arch)")
    k.add_argument("--kernels", choices=("auto", "triton", "torch"), default="auto",
                   help="the choice `build(kernels=...)` makes: auto (Triton on CUDA where it applies), triton, torch")
    k.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="the device the model would run on (cuda)")
    k.add_argument("--pipeline", default="O1", choices=("O0", "O1", "O2"),
                   help="the optimization level the model is built at (O1: fused residual add + norm)")
    k.add_argument("--emit", metavar="DIR", type=output, help="write the rendered kernel files (and kernels.json) to DIR")
    k.add_argument("--force", action="store_true", help="replace kernel files an earlier --emit wrote in DIR")
    k.add_argument("--json", action="store_true", help="machine-readable output")
    add_limit_flags(k)
    k.set_defaults(fn=cmd_kernels)
