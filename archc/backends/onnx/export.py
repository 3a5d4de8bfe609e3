"""`archc export`: a spec (and its weights) to a folder onnxruntime runs without torch.

The folder holds `model.onnx` (a decoder for causal single-input specs: tokens, the first
token's position and the declared state in; logits and the new state out; a forward graph for
everything else) and `archc_export.json` (see `manifest.py`). Nothing outside the folder is
written, and the folder changes only when the export is complete: it is built in a transaction
and committed by renames (`archc.files.output`). An existing non-empty folder is refused unless
`force`, and then only archc's own files in it (`EXPORT_FILES`) are replaced.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from archc.backends.onnx import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, ExportError
from archc.backends.onnx.assemble import LOGITS, Assembler, Exported
from archc.backends.onnx.calibrate import Calibration
from archc.backends.onnx.compress import REFERENCE, quantize_folder
from archc.backends.onnx.genai import CONFIG, genai_dims, genai_support, write_genai_config
from archc.backends.onnx.lower import TARGETS
from archc.backends.onnx.manifest import MANIFEST, Manifest, PortInfo, StateInfo, read_manifest
from archc.backends.onnx.optimize import prune
from archc.backends.onnx.precision import QuantizeOptions
from archc.backends.onnx.state import refuse_state_request
from archc.backends.torch import optimize
from archc.backends.torch.model import ArchModel
from archc.data.tokenizer import COMPANIONS, TOKENIZER_FILE, Tokenizer, write_tokenizer_files
from archc.files.output import Owned, output_folder, write_text
from archc.passes.facts import node_state
from archc.passes.manager import EXPORT_LEVEL

#: the files of one export (the folder's, and its fp32 reference's): an encoder–decoder's
#: generation graphs beside the forward graph
FOLDER_FILES = ("model.onnx", "model.onnx.data", "encoder.onnx", "encoder.onnx.data", "decoder.onnx",
                "decoder.onnx.data", CONFIG, MANIFEST)
#: what an export writes: the only paths `force` replaces (the manifest is the commit marker)
EXPORTED = Owned(files=(*FOLDER_FILES, *(f"{REFERENCE}/{f}" for f in FOLDER_FILES), TOKENIZER_FILE, *COMPANIONS),
                 marker=MANIFEST, refuse="any", what="export")


@dataclass
class ExportReport:
    folder: Path
    manifest: Manifest
    seconds: float
    unit_seconds: float
    units: int
    nodes: int
    bytes: int
    #: a quantized export: the fp32 export it was made from (None: not kept) and its size
    reference: Path | None = None
    reference_bytes: int | None = None
    quantize_seconds: float = 0.0
    #: `--target ort`: node -> the onnxruntime operator it became; node -> why it was traced
    lowered: dict[str, str] = field(default_factory=dict)
    not_lowered: dict[str, str] = field(default_factory=dict)


def export_model(model: ArchModel, folder: Path, spec_text: str, spec_name: str, weights: str,
                 opset: int | None = None, force: bool = False, quantize: QuantizeOptions | None = None,
                 calibration: Calibration | None = None, held_out: np.ndarray | None = None,
                 keep_reference: bool = True, pipeline: str = EXPORT_LEVEL, target: str = "ort",
                 tokenizer: Tokenizer | None = None, logits: str = "all") -> ExportReport:
    """Export `model` (built from the spec whose text is `spec_text`) into `folder`. `opset`: the
    given one, else the spec's export section's, else `DEFAULT_OPSET`; the section's `step = false`
    writes a forward graph (logits, no state) for a decoder. With `quantize` (None: the section's
    `quantize`; `QuantizeOptions("none")`: fp32 whatever the section says), the fp32 export is
    written to `folder/reference` (to the transaction's scratch folder unless `keep_reference`)
    and quantized into `folder` (`compress.quantize_folder`). The section's `quantize_state` (or
    `quantize.state`) int8 stores a decoder's KV caches in int8. The folder changes only when the
    export is complete, and then only in archc's own files (`EXPORTED`; `archc.files.output`).
    `pipeline` (default `O2`) is the optimization level of the exported graph: an `O0` model is
    rebuilt at it (`archc.backends.torch.optimize`), a model built at it is exported as it is.
    `target` `ort` (default) lowers nodes to onnxruntime's fused operators where their math is
    the op's (`archc/backends/onnx/ort/`), `onnx` keeps to standard operators. A `tokenizer` with
    files (a `tokenizer.json`) is copied into the folder, named in the manifest and in
    `genai_config.json`, so that `archc run` and onnxruntime-genai speak text. `logits="last"`
    makes a decoder's head run on the last position only (for generation; `Assembler.logits`)."""
    if target not in TARGETS:
        raise ExportError(f"unknown target `{target}`", f"targets: {', '.join(TARGETS)}", code="ARC1103")
    if logits not in LOGITS:
        raise ExportError(f"unknown --logits `{logits}`", f"choose one of: {', '.join(LOGITS)}", code="ARC1103")
    if model.pipeline != pipeline:
        model = optimize(model, pipeline)
    settings = export_settings(model)
    if quantize is None and (settings.get("quantize", "none") != "none" or settings.get("quantize_state") == "int8"):
        quantize = QuantizeOptions(settings.get("quantize", "none"), state=settings.get("quantize_state", "fp32"))
    opset = opset or settings.get("opset") or DEFAULT_OPSET
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset {opset} is outside what the exporter emits ({MIN_OPSET} to {MAX_OPSET})",
                          f"pass --opset {DEFAULT_OPSET} (the default), or set `opset` in the spec's export section "
                          f"between {MIN_OPSET} and {MAX_OPSET}", code="ARC1103")
    if quantize is not None and quantize.state == "int8":
        refuse_state_request(model.graph, opset, settings.get("step", True), model.graph.name)
    if logits == "last":
        _check_last_logits(model, settings.get("step", True))
    quantized = quantize is not None and quantize.quantizes_anything
    with output_folder(folder, EXPORTED, force, needed_bytes=_needed_bytes(model, quantized, keep_reference)) as txn:
        if not quantized:
            report = _export_into(model, txn.stage, spec_text, spec_name, weights, opset, settings.get("step", True),
                                  target, logits)
        else:
            report = _export_quantized(model, txn.stage, txn.scratch, spec_text, spec_name, weights, opset,
                                       settings.get("step", True), quantize, calibration, held_out, keep_reference,
                                       target, logits)
        if tokenizer is not None and tokenizer.files:
            report.manifest = attach_tokenizer(txn.stage, tokenizer)
    report.folder = folder
    report.reference = folder / REFERENCE if report.reference is not None else None
    return report


def attach_tokenizer(folder: Path, tokenizer: Tokenizer) -> Manifest:
    """Copy the tokenizer's files into an export folder (`write_tokenizer_files`) and name it in
    the manifest and genai's config (its end-of-sequence id)."""
    write_tokenizer_files(tokenizer, folder)
    manifest = read_manifest(folder)
    manifest.tokenizer, manifest.eos_token_id = TOKENIZER_FILE, tokenizer.eos_id
    manifest.write(folder)
    genai = folder / CONFIG
    if genai.exists():
        cfg = json.loads(genai.read_text())
        cfg["model"].update(eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.eos_id, bos_token_id=tokenizer.eos_id)
        write_text(genai, json.dumps(cfg, indent=2) + "\n")
    return manifest


def _needed_bytes(model: ArchModel, quantized: bool, keep_reference: bool) -> int:
    """About what the export writes: the fp32 weights, once more for a quantized export's fp32
    reference (it is written first in any case), plus room for the graph."""
    fp32 = 4 * sum(p.numel() for p in model.parameters())
    return fp32 * (2 if quantized else 1) + 8_000_000


def _export_quantized(model: ArchModel, folder: Path, scratch: Path, spec_text: str, spec_name: str, weights: str,
                      opset: int, step: bool, options: QuantizeOptions, calibration: Calibration | None,
                      held_out: np.ndarray | None, keep_reference: bool, target: str, logits: str = "all") -> ExportReport:
    """The fp32 export into `reference/` (into `scratch` unless kept), then its quantized copy into
    the folder itself."""
    ref = folder / REFERENCE if keep_reference else scratch / REFERENCE
    ref.mkdir()
    fp32 = _export_into(model, ref, spec_text, spec_name, weights, opset, step, target, logits)
    q = quantize_folder(folder, model.graph, options, calibration, held_out, reference=ref)
    quantized_manifest = read_manifest(folder)
    if quantized_manifest.seq2seq is not None:  # the generation graphs stay fp32, in the reference folder only
        quantized_manifest.seq2seq = None
        quantized_manifest.write(folder)
    if not keep_reference:
        q.quantization.reference = None
        m = read_manifest(folder)
        m.quantization = q.quantization
        m.write(folder)
    manifest = read_manifest(folder)
    return ExportReport(folder, manifest, fp32.seconds + q.seconds, fp32.unit_seconds, fp32.units, fp32.nodes, q.bytes,
                        reference=ref if keep_reference else None, reference_bytes=fp32.bytes,
                        quantize_seconds=q.seconds, lowered=fp32.lowered, not_lowered=fp32.not_lowered)


def export_settings(model: ArchModel) -> dict:
    """The spec's `export onnx { ... }` section (validated by the front end), or {}."""
    return model.graph.sections.get("export.onnx", {})


def section_pruned(model: ArchModel, spec_text: str) -> tuple[ArchModel, str, str | None]:
    """The model and spec text the export section's `prune = heads(f) | ffn(f) | experts(n) |
    magnitude(f)` makes (magnitude importance: an export has no data), and a line saying what was
    pruned; the model unchanged without one. The pruned spec is what the manifest then records."""
    rule = export_settings(model).get("prune")
    if not rule:
        return model, spec_text, None
    from archc.backends.torch.prune_spec import PruneOptions, prune_spec

    fn, amount = rule["fn"], float(rule["args"][0])
    if fn == "magnitude":
        options = PruneOptions(magnitude=amount)
    elif fn == "experts":
        moes = [n for n in model.graph.nodes.values() if n.op == "moe"]
        ratio = amount / int(moes[0].params["experts"]) if moes and amount >= 1 else amount
        options = PruneOptions({"experts": ratio})
    else:
        options = PruneOptions({fn: amount})
    path = next(iter(model.graph.nodes.values())).span.file
    res = prune_spec(model, path, spec_text, options)
    return res.model.eval(), res.text, f"{fn}({rule['args'][0]}): {res.params_before:,} → {res.params_after:,} parameters"


def _check_last_logits(model: ArchModel, step: bool) -> None:
    """`--logits last` is for a decoder whose head reads each position alone (`lm_head`): only
    then is the head at the last position the last row of the head at every position."""
    out = model.graph.nodes[model.graph.outputs[0]]
    if not (model.causal and len(model.input_names) == 1 and step) or out.op != "lm_head":
        what = "a forward graph" if out.op == "lm_head" else f"a model that ends in `{out.op}`"
        raise ExportError(f"--logits last: {model.graph.name} exports as {what}, not a decoder ending in lm_head",
                          "--logits last keeps the last position of a causal decoder's logits for generation; "
                          "leave it out here", code="ARC1101")


def _export_into(model: ArchModel, folder: Path, spec_text: str, spec_name: str, weights: str,
                 opset: int, step: bool, target: str = "ort", logits: str = "all") -> ExportReport:
    t0 = time.perf_counter()
    model = model.eval()
    decoder = model.causal and len(model.input_names) == 1 and step
    asm = Assembler(model, opset, target, logits if decoder else "all")
    ex = asm.decoder() if decoder else asm.forward_graph()
    model_ir = prune(ex.model)
    del ex.model  # the unsimplified copy of every weight
    path = folder / "model.onnx"
    _save(model_ir, path)
    onnx.checker.check_model(str(path), full_check=True)  # by path: it may exceed protobuf's 2 GB
    manifest = _manifest(ex, model, spec_text, spec_name, weights, opset)
    manifest.target = target
    manifest.logits = asm.logits
    if _decodes_as_seq2seq(model):
        from archc.backends.onnx.seq2seq import export_seq2seq

        manifest.seq2seq = export_seq2seq(model, folder, opset)
    ok, manifest.genai = genai_support(manifest)
    if ok:
        write_genai_config(folder, manifest, *genai_dims(model.graph), max_positions(model) or 8192)
    manifest.write(folder)
    size = sum((folder / f).stat().st_size for f in FOLDER_FILES if (folder / f).exists())
    nodes = sum(1 for _ in ir.traversal.RecursiveGraphIterator(model_ir.graph))
    return ExportReport(folder, manifest, time.perf_counter() - t0, ex.unit_seconds, ex.units, nodes, size,
                        lowered=ex.lowered, not_lowered=ex.not_lowered)


def _decodes_as_seq2seq(model: ArchModel) -> bool:
    """A two-input model whose target side decodes one token at a time (`EncoderDecoder`)."""
    if len(model.input_names) != 2 or model.head_loss != "lm":
        return False
    from archc.backends.torch.seq2seq import EncoderDecoder

    try:
        EncoderDecoder(model)
    except ValueError:
        return False
    return True


#: Above this many bytes of weights they go to `model.onnx.data` (protobuf's limit is 2 GB).
EXTERNAL_DATA_BYTES = 1_800_000_000


def _save(model: ir.Model, path: Path) -> None:
    """Weights inline below protobuf's 2 GB limit, else in `model.onnx.data` beside the model
    (a relative location inside the folder)."""
    weights = sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)
    if weights > EXTERNAL_DATA_BYTES:
        ir.save(model, path, external_data="model.onnx.data")
    else:
        ir.save(model, path)


def _manifest(ex: Exported, model: ArchModel, spec_text: str, spec_name: str, weights: str, opset: int) -> Manifest:
    declared = {(n.id, s.name): s for n in model.graph.nodes.values() for s in node_state(model.graph, n)}
    states = [StateInfo(input=sn.past, output=sn.present, node=sn.node, state=sn.state, dtype=p.dtype,
                        shape=p.shape, fill=_fill(model, sn.node, declared[(sn.node, sn.state)].fill),
                        kv=declared[(sn.node, sn.state)].kv, axes=ex.state_axes.get(sn.past)) for sn, p in ex.states]
    return Manifest(kind=ex.kind, spec=spec_name, spec_sha256=hashlib.sha256(spec_text.encode()).hexdigest(),
                    opset=opset, vocab=model.out_type_vocab(),
                    inputs=[PortInfo(name=p.name, dtype=p.dtype, shape=p.shape) for p in ex.inputs],
                    outputs=[PortInfo(name=p.name, dtype=p.dtype, shape=p.shape) for p in ex.outputs],
                    state=states, weights=weights, pipeline=model.pipeline)


def _fill(model: ArchModel, node_id: str, fill: float | str) -> float | list:
    """A state's initial value for the manifest: the number, or the parameter's values."""
    if isinstance(fill, str):
        return model.get_submodule(node_id).get_parameter(fill).detach().float().cpu().tolist()
    return float(fill)


# -- parity ---------------------------------------------------------------------------------


@dataclass
class ParityRow:
    what: str
    max_abs: float
    ok: bool
    #: not compared: the torch model itself cannot run this case (a length past its tables)
    skipped: bool = False


#: The parity bound of a quantized export, per scheme: the RMS of (onnx − torch) logits relative
#: to the RMS of torch's logits about their per-position mean (softmax ignores the mean). Sanity
#: bounds that hold for random-init models as well as trained ones — a wrong scale, zero point or
#: shared table gives ≥ 1; what quantization costs a trained model is measured by
#: `archc compress-report` (top-1 agreement and perplexity), docs/compression.md.
#: "none": fp32 weights with the KV caches in int8 (`--quantize-state int8` alone).
QUANTIZED_TOLERANCE = {"int8_dynamic": 0.25, "int8_static": 0.25, "int8_block": 0.25, "int4": 0.8, "none": 0.25}


def parity_metric(folder: Path) -> tuple[str, float]:
    """("max_abs", 1e-4) for an fp32 export, ("rel_rms", bound) for a quantized one."""
    from archc.backends.onnx.manifest import read_manifest

    q = read_manifest(folder).quantization
    return ("max_abs", 1e-4) if q is None else ("rel_rms", QUANTIZED_TOLERANCE[q.scheme])


def _error(got: np.ndarray, ref: np.ndarray, metric: str) -> float:
    if got.shape != ref.shape:
        return float("inf")
    if metric == "max_abs":
        return float(np.abs(got - ref).max())
    centered = ref - ref.mean(-1, keepdims=True)
    return float(np.sqrt(np.mean((got - ref) ** 2) / max(np.mean(centered ** 2), 1e-30)))


def check_parity(model: ArchModel, folder: Path, lengths: tuple[int, ...] = (1, 17, 512), prefill: int = 64,
                 steps: int = 64, atol: float | None = None, seed: int = 0) -> list[ParityRow]:
    """onnxruntime (CPU) against the torch module in fp32: full-sequence logits at each length,
    and for decoders a prefill of `prefill` tokens then `steps` one-token steps through the ONNX
    state against the torch forward of the whole sequence; batch 3. An fp32 export is held to
    max |onnx − torch| ≤ 1e-4, a quantized one to its scheme's relative bound
    (`QUANTIZED_TOLERANCE`); `atol` overrides the bound. `ParityRow.max_abs` holds the error. A
    `--logits last` export is compared at each run's last position (so the decode rows are every
    step's token), and a right-padded batch, whose short rows end in padding, is not asked of it."""
    import torch

    from archc.backends.onnx.runtime import OnnxModel

    metric, bound = parity_metric(folder)
    atol = bound if atol is None else atol
    onnx_model = OnnxModel(folder)
    gen = torch.Generator().manual_seed(seed)
    rows: list[ParityRow] = []
    model = model.eval()
    longest = max_positions(model)
    last = onnx_model.manifest.logits == "last"
    for t in lengths:
        if longest is not None and t > longest:
            continue  # beyond the spec's learned positions: no model runs there
        feeds = {name: torch.randint(0, _input_vocab(model, name), (3, t), generator=gen) for name in model.input_names}
        try:
            with torch.no_grad():
                ref = model(**feeds).logits.float().numpy()
        except IndexError:  # a length past the spec's own tables (Perceiver's positions)
            rows.append(ParityRow(f"forward, seq {t}: the torch model cannot run it (IndexError)", float("nan"),
                                  True, skipped=True))
            continue
        if len(feeds) == 1:
            got = onnx_model.logits(next(iter(feeds.values())).numpy())
        else:  # an encoder–decoder's forward graph takes the spec's input names
            ort_feeds = {k: v.numpy() for k, v in feeds.items()}
            ort_feeds["attention_mask"] = np.ones((3, t), np.int64)
            got = onnx_model.session.run(["logits"], ort_feeds)[0]
        ref = ref[:, -1:] if last else ref
        err = _error(got, ref, metric)
        rows.append(ParityRow(f"forward, seq {t}" + (", last position" if last else "")
                              + ("" if got.shape == ref.shape else f" (shape {got.shape}, torch {ref.shape})"),
                              err, err <= atol))
    if onnx_model.manifest.kind == "decoder" and not last:
        rows.append(_right_padded(model, onnx_model, gen, atol, metric))
    if onnx_model.manifest.kind == "decoder" and steps:
        ids = torch.randint(0, _input_vocab(model, model.input_names[0]), (3, prefill + steps), generator=gen)
        with torch.no_grad():
            ref = model(ids).logits.float().numpy()
        state = onnx_model.init_state(3, prefill + steps)
        outs = []
        lg, state = onnx_model.step(ids[:, :prefill].numpy(), 0, state)
        outs.append(lg)
        for i in range(prefill, prefill + steps):
            lg, state = onnx_model.step(ids[:, i:i + 1].numpy(), i, state)
            outs.append(lg)
        got = np.concatenate(outs, 1)
        ref = ref[:, prefill - 1:] if last else ref  # the prefill's last position, then each step's
        err = _error(got, ref, metric)
        rows.append(ParityRow(f"prefill {prefill} + {steps} steps", err, err <= atol))
    return rows


def _right_padded(model: ArchModel, onnx_model, gen, atol: float, metric: str,
                  lengths: tuple[int, ...] = (17, 9, 4)) -> ParityRow:
    """A batch of 3 prompts of different lengths, right-padded, in one prefill: each row's logits
    at its real positions against the torch forward of that row alone."""
    import torch

    t = max(lengths)
    ids = torch.randint(0, _input_vocab(model, model.input_names[0]), (len(lengths), t), generator=gen)
    mask = (torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]).long()
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    feeds.update({s.input: v for s, v in zip(onnx_model.manifest.state, onnx_model.init_state(len(lengths)),
                                             strict=True)})
    got = onnx_model.session.run(["logits"], feeds)[0]
    err = 0.0
    for i, n in enumerate(lengths):
        with torch.no_grad():
            ref = model(ids[i:i + 1, :n]).logits.float().numpy()
        err = max(err, _error(got[i:i + 1, :n], ref, metric))
    return ParityRow(f"right-padded batch {len(lengths)} (lengths {', '.join(map(str, lengths))})", err, err <= atol)


def max_positions(model: ArchModel) -> int | None:
    """The longest sequence the spec can take (learned position tables), None when unbounded."""
    limits = [int(n.params["max_len"]) for n in model.graph.walk() if n.op == "learned_pos"]
    return min(limits) if limits else None


def _input_vocab(model: ArchModel, name: str) -> int:
    """The vocabulary of the embedding that reads graph input `name`."""
    for n in model.graph.nodes.values():
        if n.op == "embed" and n.inputs and n.inputs[0] == name:
            return int(n.params["vocab"])
    return model.out_type_vocab()
