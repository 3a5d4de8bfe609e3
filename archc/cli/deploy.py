"""`archc export` (needs torch: it exports the torch modules) and `archc run` (numpy and
onnxruntime only: this module imports neither torch nor the export code at import time)."""

from __future__ import annotations

import argparse
import codecs
import sys
from pathlib import Path

from archc.cli.common import EXIT_ERRORS, EXIT_OK, add_limit_flags
from archc.cli.data import add_tokenizer_flag
from archc.cli.flags import add_memory_flag, count, data_source, output, seed, threads
from archc.cli.model import (
    _build_model,
    _fail,
    _load_weights,
    _run,
    add_pipeline_flag,
    add_sampling_flags,
    check_memory,
    data_bytes,
    prompt_bytes,
    prompt_ids,
    text_tokenizer,
)
from archc.passes.manager import EXPORT_LEVEL


def block_size(text: str) -> int:
    """MatMulNBits' block along the input axis: onnxruntime takes a power of two ≥ 16."""
    value = count(16, 256)(text)
    if value & (value - 1):
        raise argparse.ArgumentTypeError(f"must be a power of two between 16 and 256, got {text}")
    return value


def _need_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise _fail("ARC0904", "this command needs onnx and onnxruntime, which are not installed",
                    'install the onnx extra: pip install "archc[onnx]"') from None


# -- export ---------------------------------------------------------------------------------


def _quantize_options(args: argparse.Namespace, model):
    """The QuantizeOptions, calibration data and held-out sequences the flags (else the spec's
    export section) ask for; QuantizeOptions("none") for an fp32 export (a flag wins over the
    section, `--quantize none` included)."""
    from archc.backends.onnx.calibrate import calibration_data, parse_source
    from archc.backends.onnx.export import export_settings
    from archc.backends.onnx.precision import QuantizeError, QuantizeOptions, parse_keep

    settings = export_settings(model)
    scheme = args.quantize or settings.get("quantize", "none")
    state = args.quantize_state or settings.get("quantize_state", "fp32")
    if scheme == "none" and (args.calibrate or args.keep or args.mixer_blind):
        raise _fail("ARC1106", "--calibrate, --keep and --mixer-blind apply to quantized weights",
                    "add --quantize int8 (or int8_static, int4)", usage=True)
    if scheme == "none" and state == "fp32":  # explicit: the section's quantize is not applied either
        return QuantizeOptions("none"), None, None
    try:
        options = QuantizeOptions(scheme, args.calibration_method, parse_keep(args.keep), args.block_size,
                                  args.mixer_blind, state)
        source = args.calibrate or settings.get("calibrate")
        if source is None or scheme == "none":
            if scheme == "int8_static":
                raise QuantizeError("int8_static needs calibration data",
                                    "pass --calibrate TASK:N (e.g. chars:256) or --calibrate FILE.txt:N", code="ARC1107")
            return options, None, None
        name, count = parse_source(source)
        vocab = model.out_type_vocab()
        check_memory(data_bytes(count, args.calibrate_seq, vocab), args.max_memory,
                     f"calibration on {count} sequences of {args.calibrate_seq} tokens")
        cal = calibration_data(name, count, args.calibrate_seq, vocab)
        held_out = calibration_data(name, min(count, 32), args.calibrate_seq, vocab, seed=1).ids
    except QuantizeError as e:
        raise _fail(e.code, e.message, e.hint, usage=e.code == "ARC1106") from None
    return options, cal, held_out


def _print_parity(rows, metric: str, bound: float, what: str) -> bool:
    width = max(len(r.what) for r in rows)
    label = "max |onnx − torch|" if metric == "max_abs" else "rel. RMS (onnx − torch)"
    for r in rows:
        verdict = "skipped" if r.skipped else f"{label} = {r.max_abs:.2e}  {'ok' if r.ok else 'FAIL'}"
        print(f"  {r.what:<{width}}  {verdict}")
    ok = all(r.ok for r in rows)
    if ok:
        print(f"parity ({what}): onnxruntime equals the torch module within {bound:g}"
              + ("" if metric == "max_abs" else " relative RMS (docs/compression.md)"))
    else:
        print(f"parity ({what}): FAILED", file=sys.stderr)
    return ok


def _cmd_export(args: argparse.Namespace, sources: dict[str, str]) -> int:
    _need_onnx()
    from archc.backends.onnx import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, ExportError
    from archc.backends.onnx.compress import explain
    from archc.backends.onnx.export import check_parity, export_model, parity_metric, section_pruned
    from archc.backends.onnx.precision import QuantizeError
    from archc.backends.torch.prune import PruneError

    if args.opset is not None and not MIN_OPSET <= args.opset <= MAX_OPSET:
        raise _fail("ARC1103", f"opset {args.opset} is outside what the exporter emits ({MIN_OPSET} to {MAX_OPSET})",
                    f"pass --opset between {MIN_OPSET} and {MAX_OPSET} (default {DEFAULT_OPSET})", usage=True)
    from archc.backends.onnx.export import EXPORTED
    from archc.files.output import check_folder

    check_folder(args.output, EXPORTED, args.force)  # before building, calibrating, exporting
    folder = Path(args.output)
    model, prog = _build_model(args.file, args.seed, sources, args, pipeline="O0")  # --pipeline: after pruning
    if args.weights:
        _load_weights(model, args.weights, "--weights")
    tokenizer = text_tokenizer(args, prog.graph, model.out_type_vocab(), args.weights)
    text = Path(args.file).read_text()
    try:
        model, text, pruned = section_pruned(model, text)
    except PruneError as e:
        raise _fail(e.code, e.message, e.hint, e.node.span if e.node is not None else None) from None
    if pruned:
        print(f"pruned as the spec's export section says, {pruned}")
    options, cal, held_out = _quantize_options(args, model)
    try:
        report = export_model(model, folder, text, prog.graph.name, args.weights or f"random init, seed {args.seed}",
                              opset=args.opset, force=args.force, quantize=options, calibration=cal,
                              held_out=held_out, keep_reference=not args.no_reference, pipeline=args.pipeline,
                              target=args.target, tokenizer=tokenizer, logits=args.logits)
    except ExportError as e:
        raise _fail(e.code, e.message, e.hint, e.node.span if e.node is not None else None) from None
    except QuantizeError as e:
        raise _fail(e.code, e.message, e.hint) from None
    m = report.manifest
    q = m.quantization
    print(f"{folder}/model.onnx: {m.kind} of {m.spec} ({m.pipeline}, --target {m.target}), {report.nodes:,} nodes, {report.bytes / 1e6:.1f} MB, "
          f"{len(m.state)} state tensors; exported in {report.seconds:.1f} s "
          f"({report.units} distinct node graphs, {report.unit_seconds:.1f} s)")
    _print_lowering(report)
    if m.tokenizer:
        print(f"  tokenizer: {m.tokenizer} ({tokenizer.vocab_size:,} tokens, end of text {m.eos_token_id})"
              + (", named in genai_config.json" if (folder / "genai_config.json").exists() else ""))
    if q is not None:
        n_q = sum(w.precision != "fp32" for w in q.weights)
        kept = sorted({w.cls or "unclassified" for w in q.weights if w.precision == "fp32"})
        if q.state != "fp32":
            kv = [s for s in m.state if s.scale_of]
            print(f"  KV caches in {q.state}: {len(kv)} tensors, one fp32 scale per token and head "
                  f"({', '.join(s.scale_of or '' for s in kv[:2])}{', …' if len(kv) > 2 else ''})")
        if q.scheme == "none":
            print(f"  weights in fp32; the fp32 export kept in {folder / q.reference}" if q.reference else
                  "  weights in fp32")
        else:
            print(f"  quantized {q.scheme}: {n_q} of {len(q.weights)} weights, {report.bytes / 1e6:.2f} MB = "
                  f"{report.bytes / report.reference_bytes:.3f}× the fp32 export ({report.reference_bytes / 1e6:.1f} MB"
                  + (f", kept in {folder / q.reference}" if q.reference else "")
                  + f"); in fp32: {', '.join(kept) or 'nothing'}" + ("" if args.explain else
                                                                    " (--explain lists every weight)"))
    if args.explain and q is not None:
        print(explain(q))
    if not args.check:
        return EXIT_OK
    ok = True
    if report.reference is not None:
        metric, bound = parity_metric(report.reference)
        ok = _print_parity(check_parity(model, report.reference), metric, bound, "fp32 reference") and ok
    metric, bound = parity_metric(folder)
    what = "fp32" if q is None else ("fp32 weights" if q.scheme == "none" else q.scheme) + (
        f", KV caches {q.state}" if q.state != "fp32" else "")
    ok = _print_parity(check_parity(model, folder), metric, bound, what) and ok
    return EXIT_OK if ok else EXIT_ERRORS


def _print_lowering(report) -> None:
    """What became one of onnxruntime's fused operators (counted by operator), and what did not,
    node by node with the reason (as `archc passes` reports fusions)."""
    from collections import Counter

    if report.lowered:
        made = Counter(report.lowered.values())
        print("  lowered directly (not traced): " + ", ".join(f"{op} ×{n}" for op, n in made.most_common()))
    by_reason: dict[tuple[str, str], list[str]] = {}
    for node, why in report.not_lowered.items():
        by_reason.setdefault((why, report.lowered.get(node, "its traced torch module")), []).append(node)
    for (why, became), nodes in by_reason.items():
        named = ", ".join(nodes[:3]) + (f" and {len(nodes) - 3} more" if len(nodes) > 3 else "")
        print(f"  not onnxruntime's fused operator: {named} ({why}); exported as {became}")


def cmd_export(args: argparse.Namespace) -> int:
    return _run(_cmd_export, args)


# -- run ------------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace, sources: dict[str, str]) -> int:
    _need_onnx()

    from archc.backends.onnx.manifest import NotAnExport
    from archc.backends.onnx.runtime import OnnxModel, OutOfMemory, state_bytes
    from archc.files.read import printable

    if args.benchmark and args.max_new_tokens < 1:
        raise _fail("ARC1307", "--benchmark measures decoding: --max-new-tokens must be ≥ 1", usage=True)
    try:
        from archc.backends.onnx.manifest import read_manifest

        if read_manifest(Path(args.folder)).seq2seq is not None:
            return _run_seq2seq(args)
        model = OnnxModel(args.folder, threads=args.threads)
    except NotAnExport as e:
        raise _fail(e.code, str(e), e.hint or "point archc run at a folder written by `archc export`") from None
    if args.num_beams > 1:
        raise _fail("ARC1307", "archc run's beam search decodes encoder–decoder exports",
                    "`archc generate --num-beams` decodes this spec in torch", usage=True)
    spec = printable(model.manifest.spec)
    if model.manifest.kind != "decoder":
        raise _fail("ARC0906", f"{spec} was exported as a forward graph; archc run generates from decoders",
                    "export a causal language model (a spec ending in lm_head with causal mixers)")
    if args.top_k is not None and args.top_k > model.vocab:
        raise _fail("ARC1307", f"--top-k {args.top_k}: the model has {model.vocab:,} tokens; top-k must be between 1 "
                    f"and {model.vocab:,}", usage=True)
    tokenizer = _folder_tokenizer(args.folder, model.manifest)
    prompt_len = args.bench_prompt if args.benchmark else len(prompt_ids(args, model.vocab, tokenizer)[0])
    check_memory(state_bytes(model.manifest, 1, prompt_len + args.max_new_tokens), args.max_memory,
                 f"decoding {prompt_len} + {args.max_new_tokens} tokens of {spec} (state and logits)")
    try:
        return _generate(args, model, spec, tokenizer)
    except OutOfMemory as e:
        raise _fail("ARC1306", str(e), "ask for fewer tokens or a shorter prompt") from None


def _run_seq2seq(args: argparse.Namespace) -> int:
    """An encoder–decoder export: the prompt is the source; prints the target (`OnnxSeq2Seq`)."""
    import numpy as np

    from archc.backends.onnx.runtime import OnnxSeq2Seq

    if args.benchmark:
        raise _fail("ARC1307", "--benchmark measures decoder exports", "leave out --benchmark", usage=True)
    model = OnnxSeq2Seq(args.folder, threads=args.threads)
    tokenizer = _folder_tokenizer(args.folder, model.manifest)
    ids, byte_level = prompt_ids(args, model.vocab, tokenizer)
    stop = args.stop_token if args.stop_token is not None else model.manifest.eos_token_id
    if stop is not None and not 0 <= stop < model.vocab:
        raise _fail("ARC0908", f"--stop-token must be a token id in [0, {model.vocab})", usage=True)
    out = model.generate(np.array([ids]), max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
                         temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, eos_token_id=stop,
                         seed=args.seed)
    target = [int(t) for t in out[0, 1:] if stop is None or int(t) != stop]
    if tokenizer is not None:
        print(tokenizer.decode(target))
    elif byte_level:
        print(b"".join(bytes([t]) if t < 256 else "\ufffd".encode() for t in target).decode("utf-8", errors="replace"))
    else:
        print(" ".join(str(t) for t in target))
    return EXIT_OK


def _folder_tokenizer(folder: str, manifest):
    """The tokenizer an export folder carries (its manifest names it), or None."""
    from archc.data.tokenizer import load_tokenizer
    from archc.files.read import inside

    if not manifest.tokenizer:
        return None
    return load_tokenizer(inside(Path(folder), manifest.tokenizer, "the manifest's tokenizer"))


def _generate(args: argparse.Namespace, model, spec: str, tokenizer=None) -> int:
    import numpy as np

    from archc.backends.onnx.runtime import benchmark

    if args.benchmark:
        b = benchmark(model, prompt=args.bench_prompt, tokens=args.max_new_tokens)
        print(f"{spec}: prefill {b.prefill_tokens_per_s:,.0f} tokens/s ({args.bench_prompt}-token prompt), "
              f"decode {b.decode_ms_per_token:.2f} ms/token")
        return EXIT_OK
    vocab = model.vocab
    ids, byte_level = prompt_ids(args, vocab, tokenizer)
    if args.stop_token is not None and not 0 <= args.stop_token < vocab:
        raise _fail("ARC0908", f"--stop-token must be a token id in [0, {vocab})", usage=True)
    stop = args.stop_token if args.stop_token is not None else model.manifest.eos_token_id
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    stream = tokenizer.stream() if tokenizer is not None else None
    out = sys.stdout

    def show(tok: np.ndarray) -> None:
        t = int(tok[0])
        if stop is not None and t == stop:
            return
        if stream is not None:
            out.write(stream.step(t))
        elif byte_level:
            out.write(decoder.decode(bytes([t]) if t < 256 else "\ufffd".encode()))
        else:
            out.write(f" {t}")
        out.flush()

    if stream is not None:
        out.write(args.prompt if args.prompt_ids is None else tokenizer.decode(ids))
        for t in ids:  # the stream's context: the next token's text may depend on the prompt's last
            stream.step(t)
    else:
        out.write(prompt_bytes(args.prompt).decode("utf-8", errors="replace") if byte_level
                  else " ".join(str(t) for t in ids))
    model.generate(np.array([ids]), max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                   top_k=args.top_k, top_p=args.top_p, eos_token_id=stop, seed=args.seed, on_token=show)
    out.write((stream.flush() if stream is not None else decoder.decode(b"", final=True) if byte_level else "") + "\n")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    return _run(_cmd_run, args)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from archc.backends.onnx import DEFAULT_OPSET

    x = sub.add_parser("export", help="export a spec (and its weights) to ONNX for onnxruntime")
    x.add_argument("file", metavar="FILE", help="spec file (.arch)")
    x.add_argument("--weights", help=".safetensors from `archc train` / `archc build -o` (default: random init)")
    x.add_argument("-o", "--output", required=True, metavar="DIR", type=output, help="the folder to write (model.onnx, archc_export.json)")
    x.add_argument("--force", action="store_true", help="replace archc's files in an existing folder")
    x.add_argument("--check", action="store_true",
                   help="then compare onnxruntime with the torch module (exit 1 beyond 1e-4; a quantized export "
                        "beyond its scheme's bound)")
    x.add_argument("--opset", type=count(1, 99), default=None,
                   help=f"ONNX opset (default: the spec's export section's, else {DEFAULT_OPSET})")
    x.add_argument("--seed", type=seed, default=0, help="seed of the init without --weights (0)")
    add_tokenizer_flag(x)
    add_pipeline_flag(x, EXPORT_LEVEL)
    x.add_argument("--target", choices=("ort", "onnx"), default="ort",
                   help="ort: onnxruntime's fused operators (GroupQueryAttention, SkipSimplifiedLayerNormalization, "
                        "…) where they compute the op; onnx: standard ONNX operators only, for other runtimes (ort)")
    x.add_argument("--logits", choices=("all", "last"), default="all",
                   help="a decoder's logits output: every position of the step's tokens (all: --check, perplexity), "
                        "or the last only (last: generation; the head skips the prompt's other positions, as "
                        "onnxruntime-genai's prune_lm_head does) (all)")
    qg = x.add_argument_group("quantization (docs/compression.md)")
    qg.add_argument("--quantize", choices=("none", "int8", "int8_dynamic", "int8_static", "int8_block", "int4"),
                    help="int8: the best of dynamic, block-wise and static on held-out data (needs --calibrate; "
                         "without it, dynamic); default: the spec's export section's, else none")
    qg.add_argument("--calibrate", metavar="SOURCE[:N]", type=data_source,
                    help="calibration data: N sequences of a task (chars:256) or N windows of a text file (notes.txt:256)")
    qg.add_argument("--calibrate-seq", type=count(2, 1_000_000), default=128, metavar="T", help="tokens per calibration sequence (128)")
    qg.add_argument("--calibration-method", choices=("minmax", "entropy", "percentile"), default="minmax",
                    help="how int8_static sets activation ranges (minmax)")
    qg.add_argument("--keep", action="append", default=[], metavar="PREC:CLASS[,CLASS]",
                    help="override a class's precision: fp32:router,norm keeps them, int8:conv quantizes (repeatable)")
    qg.add_argument("--mixer-blind", action="store_true",
                    help="ignore the precision rules: quantize every node the tool can (for comparison)")
    qg.add_argument("--block-size", type=block_size, default=None,
                    help="MatMulNBits block size along the input axis: a power of two, 16 to 256 "
                         "(default: int4 32, int8_block 64)")
    qg.add_argument("--quantize-state", choices=("fp32", "int8"), default=None,
                    help="int8: store a decoder's KV caches in int8 with one scale per token and head (4x less "
                         "state; recurrent state always stays fp32); default: the spec's export section's, else fp32")
    qg.add_argument("--no-reference", action="store_true",
                    help="do not keep the fp32 export in DIR/reference (archc compress-report compares against it)")
    qg.add_argument("--explain", action="store_true", help="list every weight: its class, precision, and why")
    add_limit_flags(x)
    add_memory_flag(x)
    x.set_defaults(fn=cmd_export)

    r = sub.add_parser("run", help="generate from an exported folder with onnxruntime (no torch)")
    r.add_argument("folder", metavar="DIR", help="a folder written by `archc export`")
    add_sampling_flags(r)
    r.add_argument("--num-beams", type=count(1), default=1,
                   help="beam search with this many beams (encoder–decoder exports; 1: greedy or sampled)")
    r.add_argument("--stop-token", type=count(0),
                   help="stop when this token id is generated (default: the folder's tokenizer's end of text)")
    r.add_argument("--seed", type=seed, default=0, help="seed of the sampling (0)")
    r.add_argument("--threads", type=threads, help="onnxruntime intra-op threads, 1 to 4 × the cores "
                                                     "(default: onnxruntime's)")
    r.add_argument("--benchmark", action="store_true",
                   help="print prefill tokens/s and decode ms/token instead of generating")
    r.add_argument("--bench-prompt", type=count(1), default=128, help="prompt length of --benchmark (128)")
    add_memory_flag(r)
    r.set_defaults(fn=cmd_run)
