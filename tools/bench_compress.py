"""The compression benchmark of issue 14 (docs/compression.md): train each tiny spec on the `chars`
task, then measure side by side, 2 threads —

* int8 (the better of dynamic and static, chosen by archc on held-out data), the same with archc's
  precision rules off (mixer-blind), and int4 weight-only: file size, onnxruntime prefill and
  decode latency, top-1 agreement and perplexity against the fp32 export;
* pruning (30% of FFN channels and 25% of heads — Mamba's and RWKV-4's inner channels where they
  have no heads; xLSTM's mLSTM heads, its sLSTM's heads being the model width — by Taylor importance) followed by 500 distillation steps from the trained
  model: perplexity against the unpruned model, before and after, and the pruned model's size and
  speed (fp32 and int8).

Usage: python tools/bench_compress.py [--specs llama mamba …] [--steps 400] [--distill-steps 500]
       [--out runs/bench_compress]; results go to docs/compression_results.json (one entry per spec,
       written as each finishes) and the table in docs/compression.md is made from them
       (`--table` prints it).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "compression_results.json"
SPECS = ["llama", "mixtral", "mamba", "mamba2", "retnet", "rwkv", "xlstm"]
#: what "30% FFN + 25% heads" means per spec: the structured units each one has
PRUNE = {"llama": {"ffn": 0.3, "heads": 0.25}, "mixtral": {"ffn": 0.3, "heads": 0.25},
         "mamba": {"inner": 0.3}, "mamba2": {"heads": 0.25}, "retnet": {"ffn": 0.3, "heads": 0.25},
         "rwkv": {"ffn": 0.3, "inner": 0.25}, "xlstm": {"ffn": 0.3, "heads": 0.25}}
VARIANTS = ("int8", "int8_mixer_blind", "int8_kv", "int4", "int4_mixer_blind")


def unigram_nats() -> float:
    """The entropy of the chars corpus's byte distribution: the loss of a model that ignores context."""
    from archc.backends.torch.tasks import Chars

    counts = torch.bincount(Chars("chars", 256).data, minlength=256).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


def torch_ppl(model, ids: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        losses = [float(model(ids[i:i + 8], labels=ids[i:i + 8]).loss) for i in range(0, len(ids), 8)]
    return math.exp(sum(losses) / len(losses))


def has_kv_cache(folder: Path) -> bool:
    from archc.backends.onnx.manifest import read_manifest

    return any(s.kv for s in read_manifest(folder).state)


def quantize_rows(row: dict, graph, out: Path, held: torch.Tensor, vocab: int, only: list[str] | None = None) -> None:
    """The quantized variants of `out/fp32` (`only` these, when given), measured against it (fills
    `row`). `int8_kv`, for specs with KV caches: the int8 row's chosen scheme with the caches in
    int8 as well (`--quantize-state int8`), its accuracy measured decoding the second half of each
    sequence through the cache."""
    from archc.backends.onnx.calibrate import calibration_data
    from archc.backends.onnx.compress import compare, latencies, quantize_folder
    from archc.backends.onnx.manifest import read_manifest
    from archc.backends.onnx.precision import QuantizeOptions
    from archc.backends.onnx.state import cache_bytes_per_token

    fp32 = out / "fp32"
    cal = calibration_data("chars", 256, 128, vocab)
    held_q = calibration_data("chars", 32, 128, vocab, seed=1).ids
    variants = {"int8": QuantizeOptions("int8"), "int8_mixer_blind": QuantizeOptions("int8", mixer_blind=True),
                "int4": QuantizeOptions("int4"), "int4_mixer_blind": QuantizeOptions("int4", mixer_blind=True)}
    if has_kv_cache(fp32):
        variants["int8_kv"] = QuantizeOptions(row.get("chosen", {}).get("int8", {}).get("scheme", "int8"), state="int8")
    variants = {k: v for k, v in variants.items() if only is None or k in only}
    folders = {}
    for key, opts in variants.items():
        t = time.perf_counter()
        rep = quantize_folder(out / key, graph, opts, cal if opts.scheme in ("int8", "int8_static") else None,
                              held_q, reference=fp32)
        folders[key] = out / key
        row.setdefault("quantize_seconds", {})[key] = time.perf_counter() - t
        row.setdefault("chosen", {})[key] = {"scheme": rep.quantization.scheme, "candidates": rep.quantization.candidates}
    ids = held.numpy()
    timed = latencies([fp32, *folders.values()], threads=2, rounds=7)
    if only is None:
        row["fp32"] = {"bytes": compare(fp32, fp32, ids).bytes, "prefill_ms": timed[fp32][0],
                       "decode_ms": timed[fp32][1]}
    for key, f in folders.items():
        c = compare(fp32, f, ids)
        q = read_manifest(f).quantization
        row[key] = {"bytes": c.bytes, "size": c.bytes / c.reference_bytes, "top1": c.top1, "ppl": c.ppl,
                    "ppl_fp32": c.ppl_reference, "ppl_ratio": c.ppl / c.ppl_reference,
                    "prefill_ms": timed[f][0], "decode_ms": timed[f][1],
                    "decode_speedup": timed[fp32][1] / timed[f][1], "prefill_speedup": timed[fp32][0] / timed[f][0],
                    "kept_fp32": sorted({w.cls or "?" for w in q.weights if w.precision == "fp32"}),
                    "state": q.state, "decoded_from": c.decoded_from,
                    "cache_bytes_per_token": cache_bytes_per_token(read_manifest(f)),
                    "cache_bytes_per_token_fp32": cache_bytes_per_token(read_manifest(fp32))}
        print(f"  {key}: {q.scheme} size {row[key]['size']:.3f}, decode {row[key]['decode_speedup']:.2f}×, "
              f"top-1 {c.top1:.4f}, ppl {100 * (row[key]['ppl_ratio'] - 1):+.2f}%", flush=True)


def run_spec(name: str, out: Path, steps: int, distill_steps: int) -> dict:
    from archc.backends.onnx.export import export_model
    from archc.backends.onnx.precision import QuantizeOptions
    from archc.backends.torch import build
    from archc.backends.torch.prune_spec import PruneOptions, prune_spec
    from archc.backends.torch.tasks import make_task, token_sequences
    from archc.backends.torch.train import Distill, TrainConfig, train

    spec = ROOT / "specs" / f"{name}-tiny.arch"
    text = spec.read_text()
    out.mkdir(parents=True, exist_ok=True)
    row: dict = {"spec": f"{name}-tiny"}
    t0 = time.perf_counter()
    model = build(str(spec), seed=0)
    vocab = model.out_type_vocab()
    task = make_task("chars", vocab)
    done = out / "train" / "last.safetensors"
    if done.is_file():  # a finished training run of an earlier, interrupted benchmark: reused
        from archc.backends.torch.checkpoint import load_weights

        losses = load_weights(model, done)["losses"]
        model.eval()
    else:
        losses = train(model, task, TrainConfig(steps=steps, batch=8, seq=128, lr=2e-3, warmup=30), out / "train",
                       progress=False, spec_name=name).losses
    row["train"] = {"steps": len(losses), "loss": sum(losses[-20:]) / 20, "unigram": unigram_nats(),
                    "seconds": time.perf_counter() - t0}
    held = token_sequences("chars", 32, 128, vocab, seed=1234)
    row["train"]["held_out_ppl"] = torch_ppl(model, held)
    print(f"{name}: trained {steps} steps, loss {row['train']['loss']:.3f} (unigram {row['train']['unigram']:.3f})",
          flush=True)

    fp32 = out / "fp32"
    export_model(model, fp32, text, name, "trained", force=True, quantize=QuantizeOptions("none"))
    quantize_rows(row, model.graph, out, held, vocab)
    ids = held.numpy()

    # pruning then distillation
    ratios = PRUNE[name]
    batches = [(b, b) for b in token_sequences("chars", 64, 128, vocab, seed=7).split(8)]
    pr = prune_spec(model, str(spec), text, PruneOptions(ratios, "taylor"), batches)
    (out / "pruned.arch").write_text(pr.text)
    student = pr.model
    ppl_teacher = row["train"]["held_out_ppl"]
    before = torch_ppl(student, held)
    t = time.perf_counter()
    train(student, task, TrainConfig(steps=distill_steps, batch=8, seq=128, lr=1e-3, warmup=20), out / "distill",
          progress=False, spec_name=f"{name}-pruned", distill=Distill(model, 2.0, 0.5))
    after = torch_ppl(student, held)
    pf = out / "pruned_fp32"
    export_model(student, pf, pr.text, f"{name}-pruned", "distilled", force=True, quantize=QuantizeOptions("none"))
    row["prune"] = {"ratios": ratios, "importance": "taylor", "params": [pr.params_before, pr.params_after],
                    "ppl_teacher": ppl_teacher, "ppl_pruned": before, "ppl_distilled": after,
                    "ppl_ratio_pruned": before / ppl_teacher, "ppl_ratio_distilled": after / ppl_teacher,
                    "distill_steps": distill_steps, "distill_seconds": time.perf_counter() - t}
    pruned_rows(row, out, str(spec), vocab, ids)
    print(f"  pruned {pr.params_before:,} -> {pr.params_after:,}: ppl {ppl_teacher:.3f} -> {before:.3f} (pruned) -> "
          f"{after:.3f} (distilled {distill_steps} steps, {100 * (after / ppl_teacher - 1):+.2f}%)", flush=True)
    control_row(row, name, out, distill_steps)
    row["seconds"] = time.perf_counter() - t0
    return row


def pruned_rows(row: dict, out: Path, spec: str, vocab: int, ids: np.ndarray) -> None:
    """The distilled student's fp32 export (`out/pruned_fp32`) quantized with `int8` (archc's
    choice), both measured against the unpruned fp32 export: size, speed, agreement."""
    from archc.backends.onnx.calibrate import calibration_data
    from archc.backends.onnx.compress import compare, latencies, quantize_folder
    from archc.backends.onnx.precision import QuantizeOptions
    from archc.frontend import loads

    fp32, pf, pq = out / "fp32", out / "pruned_fp32", out / "pruned_int8"
    graph = loads((out / "pruned.arch").read_text(), spec).graph
    cal = calibration_data("chars", 256, 128, vocab)
    held_q = calibration_data("chars", 32, 128, vocab, seed=1).ids
    rep = quantize_folder(pq, graph, QuantizeOptions("int8"), cal, held_q, reference=pf)
    timed = latencies([fp32, pf, pq], threads=2, rounds=7)
    c_pf, c_pq = compare(fp32, pf, ids), compare(fp32, pq, ids)
    row["prune"].update(
        fp32={"size": c_pf.bytes / c_pf.reference_bytes, "decode_speedup": timed[fp32][1] / timed[pf][1],
              "prefill_speedup": timed[fp32][0] / timed[pf][0], "top1": c_pf.top1},
        int8={"size": c_pq.bytes / c_pq.reference_bytes, "decode_speedup": timed[fp32][1] / timed[pq][1],
              "prefill_speedup": timed[fp32][0] / timed[pq][0], "top1": c_pq.top1,
              "ppl_ratio": c_pq.ppl / c_pq.ppl_reference, "scheme": rep.quantization.scheme})


def control_row(row: dict, name: str, out: Path, distill_steps: int) -> None:
    """The fair comparison for the distilled student: the *unpruned* trained model trained the same
    `distill_steps` more steps (same schedule, hard labels), so that "within 5% of the unpruned
    model" does not credit the student with training the teacher never had."""
    from archc.backends.torch import build
    from archc.backends.torch.checkpoint import load_weights
    from archc.backends.torch.tasks import make_task, token_sequences
    from archc.backends.torch.train import TrainConfig, train

    model = build(str(ROOT / "specs" / f"{name}-tiny.arch"), seed=0)
    load_weights(model, out / "train" / "last.safetensors")
    vocab = model.out_type_vocab()
    train(model, make_task("chars", vocab), TrainConfig(steps=distill_steps, batch=8, seq=128, lr=1e-3, warmup=20),
          out / "control", progress=False, spec_name=f"{name}-control")
    ppl = torch_ppl(model, token_sequences("chars", 32, 128, vocab, seed=1234))
    p = row["prune"]
    p.update(ppl_control=ppl, ppl_ratio_control=p["ppl_distilled"] / ppl)
    print(f"  control: the unpruned model {distill_steps} more steps: ppl {ppl:.3f}; the distilled student "
          f"{100 * (p['ppl_ratio_control'] - 1):+.2f}% from it", flush=True)


def remeasure(row: dict, out: Path) -> None:
    """The latency fields of a finished row measured again (all folders of the spec interleaved)."""
    from archc.backends.onnx.compress import latencies

    keys = [k for k in VARIANTS if k in row]
    folders = [out / "fp32", *(out / k for k in keys), out / "pruned_fp32", out / "pruned_int8"]
    timed = latencies(folders, threads=2, rounds=11)
    base = timed[out / "fp32"]
    row["fp32"].update(prefill_ms=base[0], decode_ms=base[1])
    for k in keys:
        pre, dec = timed[out / k]
        row[k].update(prefill_ms=pre, decode_ms=dec, decode_speedup=base[1] / dec, prefill_speedup=base[0] / pre)
    for k, folder in (("fp32", "pruned_fp32"), ("int8", "pruned_int8")):
        pre, dec = timed[out / folder]
        row["prune"][k].update(decode_speedup=base[1] / dec, prefill_speedup=base[0] / pre)
    print(f"{row['spec']}: " + ", ".join(f"{k} decode {row[k]['decode_speedup']:.2f}×" for k in keys), flush=True)


def save(results: dict, name: str) -> None:
    """Write `results[name]` into the results file as it is now (another run may have added specs)."""
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    saved[name] = results[name]
    RESULTS.write_text(json.dumps(saved, indent=1, default=float) + "\n")


def table(results: dict) -> str:
    lines = ["| spec | loss (unigram) | scheme | size × | decode × | prefill × | top-1 | ppl Δ | kept fp32 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        tr = r["train"]
        for key in VARIANTS:
            if key not in r:
                continue
            q = r[key]
            scheme = r["chosen"][key]["scheme"] + (" (rules off)" if "blind" in key else "") + (
                f" + KV int8 ({q['cache_bytes_per_token_fp32']:,} → {q['cache_bytes_per_token']:,} B/token; "
                f"top-1/ppl decoding from token {q['decoded_from']})" if key == "int8_kv" else "")
            lines.append(f"| {name} | {tr['loss']:.2f} ({tr['unigram']:.2f}) | {scheme} | {q['size']:.3f} | "
                         f"{q['decode_speedup']:.2f} | {q['prefill_speedup']:.2f} | {q['top1']:.4f} | "
                         f"{100 * (q['ppl_ratio'] - 1):+.2f}% | {', '.join(q['kept_fp32']) or '—'} |")
    lines += ["", "| spec | pruned | params | ppl: teacher → pruned → distilled | Δ vs teacher | "
              "Δ vs unpruned + same steps | fp32 size × / decode × | + int8 size × / decode × / top-1 |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        p = r.get("prune")
        if p is None:
            continue
        what = ", ".join(f"{k} {v:.0%}" for k, v in p["ratios"].items())
        lines.append(f"| {name} | {what} | {p['params'][0] / 1e6:.2f}M → {p['params'][1] / 1e6:.2f}M | "
                     f"{p['ppl_teacher']:.3f} → {p['ppl_pruned']:.3f} → {p['ppl_distilled']:.3f} | "
                     f"{100 * (p['ppl_ratio_distilled'] - 1):+.2f}% | "
                     + (f"{100 * (p['ppl_ratio_control'] - 1):+.2f}% (ppl {p['ppl_control']:.3f})"
                        if "ppl_control" in p else "—") + f" | {p['fp32']['size']:.3f} / "
                     f"{p['fp32']['decode_speedup']:.2f} | {p['int8']['size']:.3f} / {p['int8']['decode_speedup']:.2f} / "
                     f"{p['int8']['top1']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--specs", nargs="*", default=SPECS)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--distill-steps", type=int, default=500)
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_compress"))
    ap.add_argument("--table", action="store_true", help="print the table of the saved results and stop")
    ap.add_argument("--quantize-only", action="store_true",
                    help="redo only the quantized variants of finished specs from their fp32 folders in --out")
    ap.add_argument("--variants", nargs="*", default=None, choices=VARIANTS,
                    help="with --quantize-only: only these variants (e.g. int8_kv)")
    ap.add_argument("--control", action="store_true",
                    help="only train the unpruned models of finished specs --distill-steps more steps (the fair "
                         "baseline of the distilled students)")
    ap.add_argument("--remeasure", action="store_true",
                    help="only measure the latencies again from the folders in --out (on a quiet machine)")
    args = ap.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.table:
        print(table(results))
        return
    torch.set_num_threads(2)
    if args.quantize_only:
        import archc
        from archc.backends.torch.tasks import token_sequences

        for name in args.specs:
            graph = archc.load(str(ROOT / "specs" / f"{name}-tiny.arch")).graph
            from archc.backends.onnx.manifest import read_manifest

            vocab = read_manifest(Path(args.out) / name / "fp32").vocab
            held = token_sequences("chars", 32, 128, vocab, seed=1234)
            quantize_rows(results[name], graph, Path(args.out) / name, held, vocab, args.variants)
            if args.variants is None and "prune" in results[name]:
                pruned_rows(results[name], Path(args.out) / name, str(ROOT / "specs" / f"{name}-tiny.arch"), vocab,
                            held.numpy())
            save(results, name)
        print(table(results))
        return
    if args.control:
        for name in args.specs:
            if "prune" in results.get(name, {}):
                control_row(results[name], name, Path(args.out) / name, args.distill_steps)
                save(results, name)
        print(table(results))
        return
    if args.remeasure:
        for name in args.specs:
            if name in results:
                remeasure(results[name], Path(args.out) / name)
                save(results, name)
        print(table(results))
        return
    for name in args.specs:
        results[name] = run_spec(name, Path(args.out) / name, args.steps, args.distill_steps)
        save(results, name)
    print(table(results))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
