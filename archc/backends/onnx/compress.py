"""A quantized export folder made from an fp32 one, and how the two compare.

`quantize_folder` quantizes the fp32 export in `reference/` (see `quantize.py` for what is
quantized and why) into the folder above it; for `int8` it builds both int8 schemes when there is
calibration data and keeps the one whose next-token predictions agree more with the fp32 export
on held-out sequences (both figures go into the manifest). `compare` is the measurement
`archc compress-report` and the benchmark print: top-1 agreement and perplexity against the fp32
export, file size, onnxruntime prefill and decode latency.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from archc.backends.onnx.calibrate import Calibration
from archc.backends.onnx.manifest import MANIFEST, Manifest, Quantization, WeightPrecision, read_manifest
from archc.backends.onnx.precision import QuantizeOptions, WeightUse
from archc.backends.onnx.quantize import Quantized, quantize_model
from archc.backends.onnx.state import check_kv_state, quantize_kv_state
from archc.ir.graph import Graph

REFERENCE = "reference"
TOOLS = {"int8_dynamic": "onnxruntime.quantization.quantize_dynamic (QOperator, per-channel int8 weights)",
         "int8_static": "onnxruntime.quantization.quantize_static (QDQ, per-channel int8 weights, uint8 activations)",
         "int8_block": "onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer (8 bits, blocks "
                       "along the input axis, symmetric; activations int8 per block at run time)",
         "int4": "onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer (block-wise int4, symmetric)",
         "none": "weights left in fp32"}


@dataclass
class QuantizeReport:
    folder: Path
    quantization: Quantization
    bytes: int
    reference_bytes: int
    seconds: float


def quantize_folder(folder: Path, graph: Graph, options: QuantizeOptions, calibration: Calibration | None = None,
                    held_out: np.ndarray | None = None, reference: Path | None = None) -> QuantizeReport:
    """Quantize the fp32 export in `reference` (default `folder/reference`) into `folder`: the
    weights by `options.scheme`, then the KV caches when `options.state` is int8."""
    t0 = time.perf_counter()
    reference = reference or folder / REFERENCE
    manifest = read_manifest(reference)
    proto = onnx.load(str(reference / manifest.model))
    if options.state == "int8":
        check_kv_state(manifest)  # before any quantizer runs
    schemes = [options.scheme] if options.scheme != "int8" else (
        ["int8_dynamic", "int8_block", "int8_static"] if calibration is not None else ["int8_dynamic"])
    results: dict[str, Quantized] = {}
    agreement: dict[str, float] = {}
    for scheme in schemes:
        opts = QuantizeOptions(scheme, options.method, options.overrides, options.block_size, options.mixer_blind)
        results[scheme] = (Quantized(proto, "none", []) if scheme == "none" else
                           quantize_model(proto, graph, opts, calibration if scheme == "int8_static" else None,
                                          manifest))
    if len(results) > 1 and held_out is not None:
        for scheme, q in results.items():
            with tempfile.TemporaryDirectory() as d:
                _write(Path(d), q.model, reference)
                agreement[scheme] = compare(reference, Path(d), held_out).top1
    chosen = max(results, key=lambda s: (agreement.get(s, 0.0), s == "int8_dynamic"))
    q = results[chosen]
    out_model, out_manifest = q.model, manifest
    if options.state == "int8":
        out_model, out_manifest = quantize_kv_state(q.model, manifest)
    _write(folder, out_model, reference, out_manifest)
    info = Quantization(
        scheme=chosen, asked=options.scheme, tool=TOOLS[chosen],
        method=options.method if chosen == "int8_static" else None,
        calibration=calibration.source if calibration is not None and chosen == "int8_static" else None,
        block_size=options.block_for(chosen) if chosen in ("int4", "int8_block") else None,
        mixer_blind=options.mixer_blind,
        overrides=dict(options.overrides), candidates={k: round(v, 5) for k, v in agreement.items()},
        shared_tables=q.shared, weights=weight_precisions(q.uses, chosen), state=options.state,
        reference=reference.relative_to(folder).as_posix() if reference.is_relative_to(folder) else None)
    m = read_manifest(folder)
    m.quantization = info
    m.write(folder)
    size = (folder / m.model).stat().st_size
    return QuantizeReport(folder, info, size, (reference / manifest.model).stat().st_size, time.perf_counter() - t0)


def _write(folder: Path, model: onnx.ModelProto, reference: Path, manifest: Manifest | None = None) -> None:
    """The quantized model with the reference's manifest (or `manifest`: quantized state changes
    the ports) and genai config beside it (not when genai cannot run the new ports)."""
    folder.mkdir(parents=True, exist_ok=True)  # a transaction's stage (or scratch): nobody reads it yet
    onnx.save(model, str(folder / "model.onnx"))
    if manifest is None:
        shutil.copyfile(reference / MANIFEST, folder / MANIFEST)
    else:
        manifest.write(folder)
    genai = folder / "genai_config.json"
    if (reference / "genai_config.json").is_file() and (manifest is None or not any(s.scale_of for s in manifest.state)):
        shutil.copyfile(reference / "genai_config.json", genai)
    elif genai.is_file():
        genai.unlink()


def weight_precisions(uses: list[WeightUse], scheme: str) -> list[WeightPrecision]:
    """One row per weight: its class, the precision it ended in, how many nodes read it, why."""
    bits = "int4" if scheme == "int4" else "int8"
    rows: dict[str, WeightPrecision] = {}
    for u in uses:
        precision = bits if u.quantize or u.why.startswith("shared:") else "fp32"
        row = rows.get(u.weight)
        if row is None:
            rows[u.weight] = WeightPrecision(weight=u.weight, cls=u.cls, precision=precision, nodes=1, why=u.why)
        else:
            row.nodes += 1
            if precision != "fp32" and row.precision == "fp32":  # a tied table: the head's quantized use wins
                row.precision, row.why = precision, u.why
    return sorted(rows.values(), key=lambda r: r.weight)


def explain(q: Quantization) -> str:
    """The `--explain` listing: per class, then per weight, what was quantized and why."""
    lines = [f"quantization: {q.scheme} ({q.tool})"]
    if q.state != "fp32":
        lines.append(f"  KV caches: {q.state}, one fp32 scale per token and head (recurrent state stays fp32)")
    if q.candidates:
        lines.append("  int8 schemes tried (top-1 agreement with fp32 on held-out sequences): "
                     + ", ".join(f"{k} {v:.4f}" for k, v in q.candidates.items()) + f" -> {q.scheme}")
    if q.calibration:
        lines.append(f"  calibration: {q.calibration}, method {q.method}")
    by_class: dict[str, list[WeightPrecision]] = {}
    for w in q.weights:
        by_class.setdefault(w.cls or "unclassified", []).append(w)
    width = max((len(w.weight) for w in q.weights), default=10)
    for cls, ws in sorted(by_class.items()):
        precisions = sorted({w.precision for w in ws})
        lines.append(f"  {cls}: {len(ws)} weights -> {', '.join(precisions)}")
        for w in ws:
            lines.append(f"    {w.weight:<{width}}  {w.precision:<5} ({w.nodes} nodes)  {w.why}")
    if q.shared_tables:
        lines.append(f"  tied tables stored once, read by the embedding lookup from the head: {', '.join(q.shared_tables)}")
    return "\n".join(lines)


# -- comparison -----------------------------------------------------------------------------


@dataclass
class Comparison:
    top1: float  # next-token agreement with the reference
    ppl: float  # perplexity of the candidate on the held-out tokens
    ppl_reference: float
    bytes: int
    reference_bytes: int
    #: positions from this one on were decoded a token at a time through the exported state
    #: (None: one prefill of the whole sequence)
    decoded_from: int | None = None


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def compare(reference: Path, candidate: Path, ids: np.ndarray, threads: int = 2, batch: int = 8,
            decode_from: int | None = None) -> Comparison:
    """`candidate` against `reference` on the token sequences `ids` [n, T]: top-1 agreement of
    the next-token predictions at every position, perplexity of both on the next tokens, file
    sizes. Logits come from one prefill of each sequence, or — from position `decode_from` on —
    from one-token decode steps through the exported state; a candidate whose KV caches are
    quantized is always measured so from T // 2 (a prefill reads its fresh keys in fp32: only
    decoding reads them back from the int8 cache). Latency is `latencies` (every folder measured
    in the same interleaved rounds)."""
    from archc.backends.onnx.runtime import OnnxModel

    ref, cand = OnnxModel(reference, threads=threads), OnnxModel(candidate, threads=threads)
    q = cand.manifest.quantization
    if decode_from is None and q is not None and q.state != "fp32":
        decode_from = ids.shape[1] // 2
    agree, nll_ref, nll_cand, count = 0, 0.0, 0.0, 0
    for i in range(0, len(ids), batch):
        x = ids[i:i + batch]
        a, b = _logits(ref, x, decode_from), _logits(cand, x, decode_from)
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        nxt = x[:, 1:]
        for lg, acc in ((a, "ref"), (b, "cand")):
            lp = np.take_along_axis(_log_softmax(lg[:, :-1].astype(np.float64)), nxt[..., None], -1)
            if acc == "ref":
                nll_ref -= float(lp.sum())
            else:
                nll_cand -= float(lp.sum())
        count += nxt.size
    return Comparison(agree / ids.size, float(np.exp(nll_cand / count)), float(np.exp(nll_ref / count)),
                      _size(candidate), _size(reference), decode_from)


def _logits(model, x: np.ndarray, decode_from: int | None) -> np.ndarray:
    if decode_from is None or model.manifest.kind != "decoder":
        return model.logits(x)
    logits, state = model.step(x[:, :decode_from], 0, model.init_state(len(x)))
    out = [logits]
    for t in range(decode_from, x.shape[1]):
        logits, state = model.step(x[:, t:t + 1], t, state)
        out.append(logits)
    return np.concatenate(out, axis=1)


def _size(folder: Path) -> int:
    m = read_manifest(folder)
    return sum((folder / f).stat().st_size for f in (m.model, m.model + ".data") if (folder / f).is_file())


def latencies(folders: list[Path], threads: int = 2, rounds: int = 9, tokens: int = 96) -> dict[Path, tuple[float, float]]:
    """Median prefill ms and decode ms/token of each folder, measured in interleaved rounds (one
    measurement of every folder per round) so that a slow stretch of a shared machine hits all
    of them alike."""
    from archc.backends.onnx.runtime import OnnxModel

    models = {f: OnnxModel(f, threads=threads) for f in folders}
    got: dict[Path, list[tuple[float, float]]] = {f: [] for f in folders}
    for _ in range(rounds):
        for f, m in models.items():
            got[f].append(latency(m, tokens=tokens, repeats=1))
    return {f: (float(np.median([p for p, _ in v])), float(np.median([d for _, d in v]))) for f, v in got.items()}


def latency(model, prompt: int = 128, tokens: int = 32, repeats: int = 5) -> tuple[float, float]:
    """Median prefill ms of a `prompt`-token prompt and median decode ms per token after it."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, model.vocab, (1, prompt))
    model.step(ids, 0, model.init_state(1))  # warm-up
    pre, dec = [], []
    for _ in range(repeats):
        state = model.init_state(1)
        t0 = time.perf_counter()
        logits, state = model.step(ids, 0, state)
        pre.append(time.perf_counter() - t0)
        nxt = logits[:, -1].argmax(-1)[:, None]
        t0 = time.perf_counter()
        for i in range(tokens):
            logits, state = model.step(nxt, prompt + i, state)
            nxt = logits[:, -1].argmax(-1)[:, None]
        dec.append((time.perf_counter() - t0) / tokens)
    return float(np.median(pre) * 1e3), float(np.median(dec) * 1e3)


__all__ = ["REFERENCE", "Comparison", "QuantizeReport", "compare", "explain", "latencies", "latency",
           "quantize_folder"]
