"""`archc export` (needs torch: it exports the torch modules) and `archc run` (numpy and
onnxruntime only: this module imports neither torch nor the export code at import time)."""

from __future__ import annotations

import argparse
import codecs
import sys
from pathlib import Path

from archc.cli.common import EXIT_ERRORS, EXIT_OK, add_limit_flags
from archc.cli.model import _build_model, _fail, _load_weights, _run, add_sampling_flags, prompt_ids


def _need_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise _fail("ARC0904", "this command needs onnx and onnxruntime, which are not installed",
                    'install the onnx extra: pip install "archc[onnx]"') from None


# -- export ---------------------------------------------------------------------------------


def _cmd_export(args: argparse.Namespace, sources: dict[str, str]) -> int:
    _need_onnx()
    from archc.backends.onnx import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, ExportError
    from archc.backends.onnx.export import check_parity, export_model, unapplied_settings

    if args.opset is not None and not MIN_OPSET <= args.opset <= MAX_OPSET:
        raise _fail("ARC1103", f"opset {args.opset} is outside what the exporter emits ({MIN_OPSET} to {MAX_OPSET})",
                    f"pass --opset between {MIN_OPSET} and {MAX_OPSET} (default {DEFAULT_OPSET})", usage=True)
    folder = Path(args.output)
    model, prog = _build_model(args.file, args.seed, sources, args)
    if args.weights:
        _load_weights(model, args.weights, "--weights")
    text = Path(args.file).read_text()
    for setting in unapplied_settings(model):
        print(f"warning: the spec's export section sets {setting}, which `archc export` does not apply yet: "
              "the model is written in fp32, unpruned", file=sys.stderr)
    try:
        report = export_model(model, folder, text, prog.graph.name, args.weights or f"random init, seed {args.seed}",
                              opset=args.opset, force=args.force)
    except ExportError as e:
        raise _fail(e.code, e.message, e.hint, e.node.span if e.node is not None else None) from None
    m = report.manifest
    print(f"{folder}/model.onnx: {m.kind} of {m.spec}, {report.nodes:,} nodes, {report.bytes / 1e6:.1f} MB, "
          f"{len(m.state)} state tensors; exported in {report.seconds:.1f} s "
          f"({report.units} distinct node graphs, {report.unit_seconds:.1f} s)")
    if not args.check:
        return EXIT_OK
    rows = check_parity(model, folder)
    width = max(len(r.what) for r in rows)
    for r in rows:
        verdict = "skipped" if r.skipped else f"max |onnx − torch| = {r.max_abs:.2e}  {'ok' if r.ok else 'FAIL'}"
        print(f"  {r.what:<{width}}  {verdict}")
    if all(r.ok for r in rows):
        print("parity: onnxruntime equals the torch module within 1e-4")
        return EXIT_OK
    print("parity: FAILED", file=sys.stderr)
    return EXIT_ERRORS


def cmd_export(args: argparse.Namespace) -> int:
    return _run(_cmd_export, args)


# -- run ------------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace, sources: dict[str, str]) -> int:
    _need_onnx()
    import numpy as np

    from archc.backends.onnx.manifest import NotAnExport
    from archc.backends.onnx.runtime import OnnxModel, benchmark

    try:
        model = OnnxModel(args.folder, threads=args.threads)
    except NotAnExport as e:
        raise _fail("ARC1104", str(e), "point archc run at a folder written by `archc export`") from None
    if model.manifest.kind != "decoder":
        raise _fail("ARC0906", f"{model.manifest.spec} was exported as a forward graph; archc run generates from decoders",
                    "export a causal language model (a spec ending in lm_head with causal mixers)")
    if args.benchmark:
        b = benchmark(model, prompt=args.bench_prompt, tokens=args.max_new_tokens)
        print(f"{model.manifest.spec}: prefill {b.prefill_tokens_per_s:,.0f} tokens/s ({args.bench_prompt}-token prompt), "
              f"decode {b.decode_ms_per_token:.2f} ms/token")
        return EXIT_OK
    vocab = model.vocab
    ids, byte_level = prompt_ids(args, vocab)
    if args.stop_token is not None and not 0 <= args.stop_token < vocab:
        raise _fail("ARC0908", f"--stop-token must be a token id in [0, {vocab})", usage=True)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out = sys.stdout

    def show(tok: np.ndarray) -> None:
        t = int(tok[0])
        if args.stop_token is not None and t == args.stop_token:
            return
        if byte_level:
            out.write(decoder.decode(bytes([t]) if t < 256 else "\ufffd".encode()))
        else:
            out.write(f" {t}")
        out.flush()

    out.write(args.prompt if byte_level else " ".join(str(t) for t in ids))
    model.generate(np.array([ids]), max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                   top_k=args.top_k, top_p=args.top_p, eos_token_id=args.stop_token, seed=args.seed, on_token=show)
    out.write((decoder.decode(b"", final=True) if byte_level else "") + "\n")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    return _run(_cmd_run, args)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from archc.backends.onnx import DEFAULT_OPSET

    x = sub.add_parser("export", help="export a spec (and its weights) to ONNX for onnxruntime")
    x.add_argument("file", metavar="FILE", help="spec file (.arch)")
    x.add_argument("--weights", help=".safetensors from `archc train` / `archc build -o` (default: random init)")
    x.add_argument("-o", "--output", required=True, metavar="DIR", help="the folder to write (model.onnx, archc_export.json)")
    x.add_argument("--force", action="store_true", help="replace archc's files in an existing folder")
    x.add_argument("--check", action="store_true",
                   help="then compare onnxruntime with the torch module (exit 1 beyond 1e-4)")
    x.add_argument("--opset", type=int, default=None,
                   help=f"ONNX opset (default: the spec's export section's, else {DEFAULT_OPSET})")
    x.add_argument("--seed", type=int, default=0, help="seed of the init without --weights (0)")
    add_limit_flags(x)
    x.set_defaults(fn=cmd_export)

    r = sub.add_parser("run", help="generate from an exported folder with onnxruntime (no torch)")
    r.add_argument("folder", metavar="DIR", help="a folder written by `archc export`")
    add_sampling_flags(r)
    r.add_argument("--stop-token", type=int, help="stop when this token id is generated")
    r.add_argument("--seed", type=int, default=0, help="seed of the sampling (0)")
    r.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: onnxruntime's)")
    r.add_argument("--benchmark", action="store_true",
                   help="print prefill tokens/s and decode ms/token instead of generating")
    r.add_argument("--bench-prompt", type=int, default=128, help="prompt length of --benchmark (128)")
    r.set_defaults(fn=cmd_run)
