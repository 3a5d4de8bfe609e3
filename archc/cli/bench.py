"""`archc bench`: a spec's forward, training step and decode, eager, compiled and with Triton
kernels, side by side with the transformers model of the same config (docs/performance.md)."""

from __future__ import annotations

import argparse
import json

from archc.cli.common import EXIT_ERRORS, EXIT_OK, add_limit_flags, load_or_report, print_diags
from archc.cli.flags import count, output, threads


def _shape(text: str) -> tuple[int, int]:
    """`BxT`: a batch of B sequences of T tokens."""
    b, sep, t = text.lower().replace("×", "x").partition("x")
    if not sep or not b.isdigit() or not t.isdigit() or int(b) < 1 or int(t) < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: give BATCHxTOKENS, e.g. 4x256")
    return int(b), int(t)


def _lengths(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(","))
    except ValueError:
        out = ()
    if not out or min(out) < 1 or max(out) > 1 << 20:
        raise argparse.ArgumentTypeError(f"{text!r}: give sequence lengths from 1 to {1 << 20:,}, e.g. 512 or "
                                         "128,512,2048")
    return out


def _workloads(text: str) -> str:
    """A comma-separated list of forward, train, decode."""
    if not text or not set(text.split(",")) <= {"forward", "train", "decode"}:
        raise argparse.ArgumentTypeError(f"{text!r}: a list of forward, train, decode")
    return text


def cmd_bench(args: argparse.Namespace) -> int:
    from archc.errors import Diagnostic

    sources: dict[str, str] = {}
    prog = load_or_report(args.file, args, sources)
    if prog is None:
        return EXIT_ERRORS
    try:
        import torch

        from archc.backends.torch.compiled import CompileError, why
        from archc.bench import Setup, bench
    except ImportError as e:
        print_diags([Diagnostic("ARC0904", f"archc bench needs PyTorch: {e}", None, "pip install 'archc[torch]'")],
                    sources)
        return EXIT_ERRORS
    if args.device == "cuda" and not torch.cuda.is_available():
        print_diags([Diagnostic("ARC1702", "--device cuda: no CUDA device here", None, "run on a CUDA machine, or "
                                "--device cpu")], sources)
        return EXIT_ERRORS
    if args.plot:  # before minutes of timing: refuse an output that exists now
        from archc.files import FileError
        from archc.files.output import check_file

        try:
            check_file(args.plot, args.force, "--plot")
        except FileError as e:
            print_diags([Diagnostic(e.code, e.message, None, e.hint)], sources)
            return EXIT_ERRORS
    if args.threads:
        torch.set_num_threads(args.threads)
    workloads = tuple(dict.fromkeys(args.workloads.split(",")))
    setup = Setup(workloads=workloads, forward_seqs=args.seq, train_batch=args.train[0], train_seq=args.train[1],
                  prompt=args.prompt, new_tokens=args.new_tokens, repeat=args.repeat, vs_hf=args.vs == "hf",
                  compile=not args.no_compile, triton=not args.no_triton, seed=args.seed)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    quiet = args.json or args.quiet
    try:
        report = bench(prog.graph, setup, device=args.device, dtype=dtype, pipeline=args.pipeline,
                       progress=None if quiet else lambda what: print(f"timing {what} …", flush=True))
    except CompileError as e:
        print_diags([Diagnostic("ARC1702", str(e), None, "rerun with --no-compile")], sources)
        return EXIT_ERRORS
    except torch._dynamo.exc.TorchDynamoException as e:
        print_diags([Diagnostic("ARC1702", why(e), None, "rerun with --no-compile")], sources)
        return EXIT_ERRORS
    except ValueError as e:
        print_diags([Diagnostic("ARC0906", str(e), None, "bench a spec that ends in lm_head")], sources)
        return EXIT_ERRORS
    if args.plot:
        from archc.files import FileError

        try:
            _plot(report, args.plot, args.force)
        except FileError as e:
            print_diags([Diagnostic(e.code, e.message, None, e.hint)], sources)
            return EXIT_ERRORS
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return EXIT_OK
    _print(report)
    return EXIT_OK


def _print(report) -> None:
    from rich.console import Console
    from rich.table import Table

    ref = "transformers" if "transformers" in report.runners else "archc eager"
    versions = ", ".join(f"{k} {v}" for k, v in report.versions.items())
    table = Table(title=f"{report.spec} on {report.device} ({report.dtype}, {report.threads} threads; {versions})",
                  title_justify="left")
    for col in ("workload", "runner", "min", "median", "max", f"÷ {ref}", "of matmul peak"):
        table.add_column(col, justify="left" if col in ("workload", "runner") else "right")
    for t in report.timings:
        unit, scale = ("ms/token", 1e3) if t.workload == "decode" else ("ms", 1e3)
        table.add_row(f"{t.workload} {t.shape}", t.runner, *(f"{v * scale:.2f} {unit}" for v in (t.min, t.median, t.max)),
                      "" if t.ratio is None else f"{t.ratio:.2f}",
                      "" if t.peak_fraction is None else f"{t.peak_fraction:.1%}")
    console = Console()
    console.print(table)
    notes = [f"matmul peak {report.peak_gflops:.1f} GFLOP/s (1024², {report.dtype})"]
    if report.hf_model_type:
        notes.append(f"transformers {report.hf_model_type}: max |Δ logits| {report.hf_max_abs_diff:.1e}")
    notes += [f"compile {k}: {v:.1f} s" for k, v in report.compile_seconds.items()]
    notes += [f"no {k}: {v}" for k, v in report.skipped.items()]
    for n in notes:
        console.print(n, highlight=False)


def _plot(report, path: str, force: bool) -> None:
    """Forward time against sequence length, one line per runner (log-log), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from archc.files.output import output_file

    fig, ax = plt.subplots(figsize=(6, 4))
    for runner in report.runners:
        pts = [(int(t.shape.split("×")[1]), t.median * 1e3) for t in report.timings
               if t.workload == "forward" and t.runner == runner]
        if pts:
            ax.plot(*zip(*sorted(pts), strict=True), marker="o", label=runner)
    ax.set(xscale="log", yscale="log", xlabel="sequence length (tokens, batch 1)", ylabel="forward (ms, median)",
           title=f"{report.spec} on {report.device}, {report.dtype}")
    ax.legend()
    fig.tight_layout()
    with output_file(path, force, "--plot") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="forward, train step and decode timed side by side: eager, compiled, Triton, "
                                     "and transformers")
    b.add_argument("file", metavar="FILE", help="spec file (.arch)")
    b.add_argument("--vs", choices=("hf", "none"), default="hf",
                   help="the peer: hf (the transformers model of the spec's family, with the same weights) or none")
    b.add_argument("--workloads", default="forward,train,decode", type=_workloads,
                   help="which of forward, train, decode to time (all three)")
    b.add_argument("--seq", type=_lengths, default=(512,), help="forward lengths at batch 1, e.g. 128,512,2048 (512)")
    b.add_argument("--train", type=_shape, default=(4, 256), metavar="BxT", help="the training step's batch (4x256)")
    b.add_argument("--prompt", type=count(1), default=128, help="decode: tokens of prompt before timing (128)")
    b.add_argument("--new-tokens", type=count(2), default=33, help="decode: tokens generated per timed call (33)")
    b.add_argument("--repeat", type=count(1), default=5, help="timed runs of each workload per runner (5)")
    b.add_argument("--no-compile", action="store_true", help="leave out the torch.compile runner")
    b.add_argument("--no-triton", action="store_true", help="leave out the Triton kernel runner")
    b.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (cpu)")
    b.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="weights and activations (fp32)")
    b.add_argument("--threads", type=threads, help="torch's intra-op threads, 1 to 4 × the cores (torch's default)")
    b.add_argument("--pipeline", default="O1", choices=("O0", "O1", "O2"), help="optimization level (O1)")
    b.add_argument("--seed", type=count(0), default=0, help="seed of the weights and the tokens (0)")
    b.add_argument("--plot", metavar="PNG", type=output, help="draw forward time against --seq lengths into PNG")
    b.add_argument("--force", action="store_true", help="replace an existing --plot file")
    b.add_argument("--json", action="store_true", help="machine-readable output")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    add_limit_flags(b)
    b.set_defaults(fn=cmd_bench)
