"""`archc prune` (needs torch) and `archc compress-report` (numpy and onnxruntime only).

`archc prune` writes a smaller spec and the weights that load into it; `archc compress-report`
measures export folders against the fp32 export they were made from. docs/compression.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from archc.cli.common import EXIT_OK, add_limit_flags
from archc.cli.flags import add_memory_flag, count, data_source, output, ratio, seed, threads
from archc.cli.model import _build_model, _fail, _load_weights, _run, check_memory, data_bytes

# -- prune ----------------------------------------------------------------------------------


def node_glob(text: str) -> str:
    """`--only`: a shell glob over node ids, checked here rather than when the first id is matched."""
    import fnmatch
    import re

    try:
        re.compile(fnmatch.translate(text))
    except re.error as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a glob pattern ({e})") from None
    return text


def experts(text: str) -> float:
    """`--experts`: a fraction in [0, 1) or a whole count ≥ 1 (checked against the spec later)."""
    value = ratio(text) if text.strip().startswith(("0", ".")) else float(count(1)(text))
    return value


def _cmd_prune(args: argparse.Namespace, sources: dict[str, str]) -> int:
    from archc.backends.torch.prune import PruneError
    from archc.backends.torch.prune_spec import (
        PruneOptions,
        experts_ratio,
        importance_batches,
        prune_into_folder,
        pruned_files,
    )
    from archc.files.output import check_folder

    check_folder(args.output, pruned_files(args.file), args.force)  # before the work, not after
    model, prog = _build_model(args.file, args.seed, sources, args)
    if args.weights:
        _load_weights(model, args.weights, "--weights")
    ratios = {k: v for k, v in (("heads", args.heads), ("kv_heads", args.kv_heads), ("ffn", args.ffn),
                                ("inner", args.inner), ("experts", args.experts)) if v}
    if not ratios and not args.layers and not args.magnitude:
        raise _fail("ARC1203", "nothing to prune",
                    "pass --heads, --kv-heads, --ffn, --inner, --experts, --layers or --magnitude",
                    usage=True)
    batches = None
    if args.calibrate:
        from archc.backends.onnx.calibrate import parse_source

        name, count = parse_source(args.calibrate)
        check_memory(data_bytes(count, args.calibrate_seq, model.out_type_vocab()), args.max_memory,
                     f"importance from {count} sequences of {args.calibrate_seq} tokens")
        try:
            batches = importance_batches(name, count, args.calibrate_seq, model.out_type_vocab(), args.seed)
        except ValueError as e:
            raise _fail("ARC1205", str(e), "pass --calibrate TASK:N or --calibrate FILE.txt:N") from None
    try:
        if "experts" in ratios:
            ratios["experts"] = experts_ratio(model, ratios["experts"])
        options = PruneOptions(ratios, args.importance, args.layers, args.magnitude, args.magnitude_scope,
                               args.only, "global" if args.global_ratio else "per-op")
        done = prune_into_folder(model, args.file, options, args.output, args.force, batches,
                                 args.weights or "random init")
    except PruneError as e:
        raise _fail(e.code, e.message, e.hint, e.node.span if e.node is not None else None,
                    usage=e.code == "ARC1203" and "--experts" in e.message) from None
    res = done.result
    if res.params_after == res.params_before and res.sparsity is None and not res.layers_removed:
        print(f"warning: the ratios given remove nothing from {prog.graph.name} (each op keeps all its units: "
              "a ratio below one unit's share rounds to zero)", file=sys.stderr)
    by_kind: dict[str, list] = {}
    for u in res.units:
        by_kind.setdefault(u.axis.kind, []).append(u)
    for kind, us in by_kind.items():
        sizes = sorted({(u.axis.units, len(u.keep)) for u in us})
        print(f"  {kind}: {len(us)} ops, " + ", ".join(f"{a} → {b}" for a, b in sizes) + f" ({args.importance})")
    if res.layers_removed:
        print(f"  layers: removed {', '.join(res.layers_removed)} (least loss when skipped)")
    if res.sparsity is not None:
        s = res.sparsity
        print(f"  magnitude: {s.fraction:.1%} of {s.total:,} weights in {s.weights} matrices are zero "
              f"({s.zeros / s.model_total:.1%} of all parameters; shapes unchanged)")
    print(f"{prog.graph.name}: {res.params_before:,} → {res.params_after:,} parameters "
          f"({res.params_after / res.params_before:.3f}×); archc summary of the new spec: "
          f"{done.report['summary_params']:,}")
    print(f"wrote {done.spec}, {done.weights}, {done.spec.parent / 'prune.json'}")
    return EXIT_OK


def cmd_prune(args: argparse.Namespace) -> int:
    return _run(_cmd_prune, args)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="prune a trained model into a smaller spec and weights (docs/compression.md)")
    p.add_argument("file", metavar="FILE", help="spec file (.arch)")
    p.add_argument("--weights", help=".safetensors from `archc train` (default: random init)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", type=output,
                   help="writes DIR/<spec>-pruned.arch, DIR/weights.safetensors, DIR/prune.json")
    p.add_argument("--heads", type=ratio,
                   help="fraction of heads to remove: attention (query), sparse and linear attention, Mamba-2, RetNet, "
                        "RWKV-6, mLSTM, Gated DeltaNet (key heads)")
    p.add_argument("--kv-heads", type=ratio,
                   help="fraction of a GQA attention's kv groups to remove, each with its query heads")
    p.add_argument("--ffn", type=ratio, help="fraction of FFN hidden channels (MoE experts' too) to remove")
    p.add_argument("--inner", type=ratio, help="fraction of Mamba / RWKV-4 inner channels to remove")
    p.add_argument("--experts", type=experts, help="MoE experts to remove: a fraction in [0, 1), or a whole "
                                                   "count (≥ 1) below the number of experts")
    p.add_argument("--layers", type=count(0), default=0, help="whole layers to remove from the layer stack")
    p.add_argument("--magnitude", type=ratio, default=0.0,
                   help="unstructured: zero this fraction of the smallest weights (shapes unchanged)")
    p.add_argument("--magnitude-scope", choices=("per-tensor", "global"), default="per-tensor")
    p.add_argument("--importance", choices=("magnitude", "activation", "taylor"), default="magnitude",
                   help="how units are ranked: weight norm, mean |activation|, or first-order Taylor (|a·∂L/∂a|)")
    p.add_argument("--calibrate", metavar="SOURCE[:N]", type=data_source, help="data for activation/Taylor importance and --layers "
                                                             "(chars:64, notes.txt:64)")
    p.add_argument("--calibrate-seq", type=count(2, 1_000_000), default=128, help="tokens per calibration sequence (128)")
    p.add_argument("--global", dest="global_ratio", action="store_true",
                   help="spend each ratio across all ops of the kind (ranked together) instead of per op; "
                        "the layers of one repeat still keep one count")
    p.add_argument("--only", metavar="GLOB", type=node_glob, help="prune only nodes whose id matches (e.g. 'layers.*.mlp')")
    p.add_argument("--seed", type=seed, default=0, help="seed of the init without --weights and of the data (0)")
    p.add_argument("--force", action="store_true", help="replace files of an earlier prune in DIR")
    add_limit_flags(p)
    add_memory_flag(p)
    p.set_defaults(fn=cmd_prune)
    add_report_parser(sub)



# -- compress-report ------------------------------------------------------------------------


def _precision_line(folder: Path) -> str:
    """Per class, the precision its weights ended in (a quantized folder), else fp32."""
    from archc.backends.onnx.manifest import read_manifest
    from archc.files.read import printable

    q = read_manifest(folder).quantization
    if q is None:
        return "fp32"
    by: dict[str, set[str]] = {}
    for w in q.weights:
        by.setdefault(w.cls or "unclassified", set()).add(w.precision)
    weights = (f"{q.scheme}: " + ", ".join(f"{c} {'/'.join(sorted(p))}" for c, p in sorted(by.items()))
               if q.scheme != "none" else "weights fp32")
    return printable(weights + (f"; KV caches {q.state}" if q.state != "fp32" else ""))  # strings of a file


def _cmd_compress_report(args: argparse.Namespace, sources: dict[str, str]) -> int:
    from archc.backends.onnx.calibrate import parse_source
    from archc.backends.onnx.compress import compare, latencies
    from archc.backends.onnx.manifest import NotAnExport, read_manifest
    from archc.backends.onnx.runtime import OnnxModel, OutOfMemory
    from archc.backends.onnx.state import cache_bytes_per_token
    from archc.backends.torch.tasks import token_sequences
    from archc.files.output import check_file, output_file
    from archc.files.read import inside

    if args.json:
        check_file(args.json, args.force, "--json")  # before the measurement, not after
    folders = [Path(f) for f in args.folders]
    try:
        manifests = [read_manifest(f) for f in folders]
        reference = Path(args.reference) if args.reference else None
        if reference is None:
            q = manifests[0].quantization
            reference = (inside(folders[0], q.reference, "the manifest's quantization.reference")
                         if q is not None and q.reference else folders[0])
        ref_manifest = read_manifest(reference)
        for f in {*folders, reference}:  # each loads and agrees with its graph: checked before measuring
            OnnxModel(f, threads=1)
    except NotAnExport as e:
        raise _fail(e.code, str(e), e.hint or "point compress-report at folders written by `archc export`") from None
    for f, m in [*zip(folders, manifests, strict=True), (reference, ref_manifest)]:
        if m.kind != "decoder":
            raise _fail("ARC0906", f"{f} holds a forward graph; compress-report measures decoders")
        if m.logits == "last":
            raise _fail("ARC0906", f"{f} was exported with --logits last: its logits are the last position's, and "
                        "agreement and perplexity score every position", "export it again without --logits last "
                        "to measure it (the head's cost is the same per generated token)")
        if m.vocab != ref_manifest.vocab:
            raise _fail("ARC0910", f"{f} predicts {m.vocab} tokens, the reference {reference} {ref_manifest.vocab}")
    from archc.backends.onnx.runtime import state_bytes

    name, count = parse_source(args.data)
    # the held-out ids, and a batch of 8 sequences through the reference and a candidate at a time
    check_memory(count * args.seq * 8 + 2 * max(state_bytes(m, 8, args.seq) for m in [ref_manifest, *manifests]),
                 args.max_memory, f"comparing {count} sequences of {args.seq} tokens in batches of 8")
    try:
        ids = token_sequences(name, count, args.seq, ref_manifest.vocab, seed=args.seed).numpy()
    except ValueError as e:
        raise _fail("ARC1107", str(e), "pass --data TASK:N or --data FILE.txt:N") from None
    rows = []
    order = [reference, *[f for f in folders if f.resolve() != reference.resolve()]]
    try:
        timed = {} if args.no_timing else latencies(order, args.threads)
        compared = {f: compare(reference, f, ids, threads=args.threads) for f in order}
    except OutOfMemory as e:
        raise _fail("ARC1306", str(e), "measure shorter sequences (--seq)") from None
    for f in order:
        c = compared[f]
        pre, dec = timed.get(f, (None, None))
        ref_pre, ref_dec = timed.get(reference, (None, None))
        rows.append({"folder": str(f), "spec": read_manifest(f).spec, "bytes": c.bytes,
                     "size_ratio": c.bytes / c.reference_bytes, "prefill_ms": pre, "decode_ms": dec,
                     "decode_speedup": ref_dec / dec if dec else None, "prefill_speedup": ref_pre / pre if pre else None,
                     "top1": c.top1, "ppl": c.ppl, "ppl_reference": c.ppl_reference,
                     "ppl_ratio": c.ppl / c.ppl_reference, "precision": _precision_line(f),
                     "cache_bytes_per_token": cache_bytes_per_token(read_manifest(f)), "decoded_from": c.decoded_from})
    print(f"against {reference} on {count} held-out sequences of {args.seq} tokens ({args.data}), "
          f"{args.threads} threads")
    head = f"{'folder':<28} {'MB':>7} {'size':>6} {'prefill ms':>10} {'decode ms':>9} {'speedup':>7} " \
           f"{'top-1':>6} {'ppl':>8} {'Δppl':>7}  precision"
    print(head)
    for r in rows:
        timing = (f"{r['prefill_ms']:>10.1f} {r['decode_ms']:>9.3f} {r['decode_speedup']:>6.2f}×" if r["decode_ms"]
                  else f"{'-':>10} {'-':>9} {'-':>7}")
        print(f"{r['folder'][-28:]:<28} {r['bytes'] / 1e6:>7.2f} {r['size_ratio']:>5.3f}× {timing} {r['top1']:>6.3f} "
              f"{r['ppl']:>8.3f} {100 * (r['ppl_ratio'] - 1):>+6.2f}%  {r['precision']}")
    if any(r["decoded_from"] is not None for r in rows):
        print("  KV-cache bytes per token: " + ", ".join(f"{Path(r['folder']).name} {r['cache_bytes_per_token']:,}"
                                                      for r in rows if r["cache_bytes_per_token"])
              + f"; rows with quantized caches measured decoding from token {args.seq // 2} on")
    if args.json:
        with output_file(args.json, args.force, "--json") as tmp:
            tmp.write_text(json.dumps({"reference": str(reference), "data": args.data, "seq": args.seq,
                                       "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return EXIT_OK


def cmd_compress_report(args: argparse.Namespace) -> int:
    return _run(_cmd_compress_report, args)


def add_report_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("compress-report", help="size, onnxruntime latency, top-1 agreement and perplexity of "
                                               "export folders against their fp32 export")
    r.add_argument("folders", nargs="+", metavar="DIR", help="folders written by `archc export` (quantized or not)")
    r.add_argument("--reference", metavar="DIR",
                   help="the fp32 export to compare against (default: the first folder's reference/)")
    r.add_argument("--data", default="chars:32", metavar="SOURCE[:N]", type=data_source,
                   help="held-out text: N sequences of a task or windows of a file (chars:32)")
    r.add_argument("--seq", type=count(2, 1_000_000), default=128, help="tokens per held-out sequence (128)")
    r.add_argument("--seed", type=seed, default=1234, help="seed of the held-out draw (1234: not calibration's)")
    r.add_argument("--threads", type=threads, default=2, help="onnxruntime intra-op threads, 1 to 4 × the cores (2)")
    r.add_argument("--no-timing", action="store_true", help="accuracy and size only")
    r.add_argument("--json", metavar="FILE", type=output, help="also write the rows as JSON")
    r.add_argument("--force", action="store_true", help="replace an existing --json file")
    add_memory_flag(r)
    r.set_defaults(fn=cmd_compress_report)
