"""archc: a declarative compiler for neural sequence-model architectures.

The public API is a set of thin wrappers over the stages (docs/architecture.md):

    >>> import archc
    >>> prog = archc.load("specs/llama-tiny.arch")       # parse + lower: a checked Graph
    >>> report = archc.summary("specs/llama-tiny.arch", seq=4096)
    >>> report.total.params
    3819776

Imports are lazy so that `archc check` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from archc.version import __version__

if TYPE_CHECKING:
    from archc.dsl.ast import Module
    from archc.errors import Diagnostic
    from archc.frontend import Program
    from archc.passes.estimate_cost import CostReport


def parse(text: str, path: str = "<string>") -> Module:
    """Source text -> AST (raises `archc.errors.ArchError`)."""
    from archc.dsl.parser import parse as _parse

    return _parse(text, path)


def load(path: str, **limits: Any) -> Program:
    """Spec file -> checked `Program` (graph, warnings, sources). Raises `ArchError`."""
    from archc.frontend import load as _load
    from archc.frontend.lower import Limits

    return _load(path, Limits(**limits))


def loads(text: str, path: str = "<string>", **limits: Any) -> Program:
    from archc.frontend import loads as _loads
    from archc.frontend.lower import Limits

    return _loads(text, path, Limits(**limits))


def check(path: str) -> list[Diagnostic]:
    """Every diagnostic (errors and warnings) for a spec file; empty when it is clean."""
    from archc.errors import ArchError

    try:
        return list(load(path).warnings)
    except ArchError as e:
        return list(e.diagnostics)


def summary(path: str, seq: int = 2048, batch: int = 1, dtype: str = "bf16") -> CostReport:
    """Cost report of a spec: parameters, FLOPs/token, activation and state memory."""
    from archc.ir.cost import CostCtx
    from archc.passes.estimate_cost import estimate_cost

    return estimate_cost(load(path).graph, CostCtx(seq=seq, batch=batch, dtype=dtype))


def build(spec: Any, seed: int = 0, device: Any = "cpu", dtype: Any = None, pipeline: str = "O1",
          kernels: str = "auto", compile: bool | str = False) -> Any:
    """Spec path (or lowered `Graph`) -> an initialized, trainable `ArchModel` (`nn.Module`),
    after the optimization pipeline `pipeline` (`O0`, `O1` (default), `O2`: docs/passes.md; the
    weights and the checkpoint layout do not depend on it). `kernels`: `auto` (Triton kernels on
    CUDA where they apply, the torch forms elsewhere), `triton` or `torch` (docs/kernels.md);
    `compile=True` compiles the forward and backward with `torch.compile` (docs/performance.md).
    Needs the torch extra. See docs/backends.md."""
    import torch

    from archc.backends.torch import build as _build

    return _build(spec, seed=seed, device=device, dtype=dtype or torch.float32, pipeline=pipeline, kernels=kernels,
                  compile=compile)


def export_onnx(spec: Any, weights: str | None = None, out: str = "export", opset: int | None = None,
                force: bool = False, seed: int = 0, quantize: str | None = None, calibrate: str | None = None,
                keep: list[str] | None = None, quantize_state: str | None = None, pipeline: str = "O2",
                target: str = "ort", logits: str = "all") -> Any:
    """Spec path (or lowered `Graph`) -> an ONNX export folder (`model.onnx`, `archc_export.json`);
    returns the path of `model.onnx`. `quantize` (int8, int8_dynamic, int8_static, int4; default:
    the spec's export section's) writes the fp32 export to `out/reference` and the quantized one
    to `out`, calibrated on `calibrate` (`chars:256`, `notes.txt:256`); `keep` as `--keep`
    (["fp32:router"]); `quantize_state="int8"` stores a decoder's KV caches in int8 (as
    `--quantize-state`). The section's `prune` is applied first, then the optimization pipeline
    `pipeline` (`O2` by default, as `archc export --pipeline`); `target` `ort` (onnxruntime's
    fused operators) or `onnx` (standard operators), as `--target`; `logits="last"` runs a decoder's
    head on the last position only, as `--logits last`. Needs the torch and onnx extras.
    See docs/onnx.md, docs/compression.md, docs/passes.md."""
    from pathlib import Path

    from archc.backends.onnx.calibrate import calibration_data, parse_source
    from archc.backends.onnx.export import export_model, export_settings, section_pruned
    from archc.backends.onnx.precision import QuantizeOptions, parse_keep
    from archc.backends.torch import build as _build
    from archc.backends.torch.checkpoint import load_weights

    model = _build(spec, seed=seed, pipeline="O0")  # the pipeline runs after the section's pruning
    if weights:
        load_weights(model, weights)
    text = Path(spec).read_text() if isinstance(spec, str | Path) else ""
    if text:
        model, text, _ = section_pruned(model, text)
    settings = export_settings(model)
    scheme = quantize or settings.get("quantize", "none")
    state = quantize_state or settings.get("quantize_state", "fp32")
    options = QuantizeOptions(scheme, overrides=parse_keep(keep or []), state=state)
    cal = held = None
    source = calibrate or settings.get("calibrate")
    if scheme != "none" and source:
        name, count = parse_source(source)
        cal = calibration_data(name, count, 128, model.out_type_vocab())
        held = calibration_data(name, min(count, 32), 128, model.out_type_vocab(), seed=1).ids
    report = export_model(model, Path(out), text, model.graph.name, weights or f"random init, seed {seed}",
                          opset=opset, force=force, quantize=options, calibration=cal, held_out=held,
                          pipeline=pipeline, target=target, logits=logits)
    return report.folder / "model.onnx"


def prune(spec: str, weights: str | None = None, out: str = "pruned", importance: str = "magnitude",
          calibrate: str | None = None, layers: int = 0, magnitude: float = 0.0, force: bool = False,
          seed: int = 0, **ratios: float) -> Any:
    """`archc prune` from Python: `archc.prune("specs/llama-tiny.arch", "w.safetensors", "out",
    heads=0.25, ffn=0.3)` writes `out/<spec>-pruned.arch`, `out/weights.safetensors` and
    `out/prune.json` (together, in one transaction; an earlier prune there only with `force`) and
    returns the new spec's path. Ratios by unit kind, each in [0, 1): heads, kv_heads, ffn, inner;
    `experts` a fraction or a count. `calibrate` ("chars:64", "notes.txt:64") feeds activation and
    Taylor importance and `layers`. Raises `archc.backends.torch.prune.PruneError`,
    `archc.files.FileError` or ValueError with the reason. See docs/compression.md."""
    import math
    from pathlib import Path

    from archc.backends.onnx.calibrate import parse_source
    from archc.backends.torch import build as _build
    from archc.backends.torch.checkpoint import load_weights
    from archc.backends.torch.prune_spec import (
        PruneOptions,
        experts_ratio,
        importance_batches,
        prune_into_folder,
    )

    kinds = ("heads", "kv_heads", "ffn", "inner", "experts")
    for kind, r in ratios.items():
        if kind not in kinds:
            raise ValueError(f"archc.prune: no unit kind {kind!r}; the kinds are {', '.join(kinds)}")
        if not math.isfinite(r) or r < 0 or (kind != "experts" and r >= 1):
            raise ValueError(f"archc.prune: {kind}={r}: a fraction of the units to remove, in [0, 1)")
    if not 0 <= magnitude < 1:
        raise ValueError(f"archc.prune: magnitude={magnitude}: a fraction of the weights, in [0, 1)")
    model = _build(spec, seed=seed, pipeline="O0")  # prune rules cut the canonical weights
    if weights:
        load_weights(model, weights)
    ratios = {k: r for k, r in ratios.items() if r}
    if "experts" in ratios:
        ratios["experts"] = experts_ratio(model, ratios["experts"])
    batches = None
    if calibrate:
        batches = importance_batches(*parse_source(calibrate), 128, model.out_type_vocab(), seed)
    options = PruneOptions(ratios, importance, layers, magnitude)
    return prune_into_folder(model, str(Path(spec)), options, out, force, batches, weights or "random init").spec


def fmt(text: str, path: str = "<string>") -> str:
    """Canonical formatting of spec text."""
    from archc.dsl.fmt import format_text

    return format_text(text, path)


def import_hf(source: str, spec_out: str | None = None, weights_out: str | None = None,
              force: bool = False) -> str:
    """A Hugging Face checkpoint folder (config.json and safetensors) → the spec text of its model;
    with `spec_out` / `weights_out`, also written (the weights under archc's names, loadable by
    `load_weights` into `build(spec_out)`; existing files refused unless `force`). Raises
    `archc.hf.HFImportError` naming what cannot be imported (docs/hf.md)."""
    from archc.hf import import_hf as _import
    from archc.hf import save

    imported = _import(source)
    save(imported, spec_out, weights_out, force)
    return imported.spec


def export_hf(spec: str, weights: str | None = None, out: str = "hf-export", force: bool = False,
              tokenizer: str | None = None, remote: bool = False) -> str:
    """A spec file and its weights as a folder `transformers.AutoModelForCausalLM.from_pretrained`
    (a BERT: its own Auto class) loads: as its Hugging Face family when the spec is exactly one
    (no archc needed to load it),
    else with archc's modeling file (`trust_remote_code=True`); `remote` forces the latter.
    Returns the `model_type` written ("archc" for the modeling file). docs/hf.md "Export"."""
    from pathlib import Path

    from archc.backends.torch import build as _build
    from archc.backends.torch.checkpoint import load_weights
    from archc.hf.exporter import export_hf as _export

    text = Path(spec).read_text()
    model = _build(loads(text, spec).graph, pipeline="O0")
    if weights:
        load_weights(model, weights)
    tok = None
    if tokenizer:
        from archc.data.tokenizer import load_tokenizer

        tok = load_tokenizer(tokenizer)
    return _export(model, text, Path(spec).name, out, force, tokenizer=tok, as_remote=remote).model_type


def evaluate(spec: str, weights: str | None, data: str, tokenizer: str = "bytes", text_field: str = "text",
             seq: int = 512, batch: int = 8, max_tokens: int | None = None) -> dict[str, float | None]:
    """Loss (nats/token), perplexity and bits per byte of a causal LM on your text, as `archc
    eval` reports them (every token scored once; docs/hf.md "Your own text")."""
    from archc.backends.torch import build as _build
    from archc.backends.torch.checkpoint import load_weights
    from archc.backends.torch.text import evaluate as _evaluate
    from archc.data.corpus import load_corpus
    from archc.data.tokenizer import load_tokenizer

    model = _build(spec)
    if weights:
        load_weights(model, weights)
    tok = load_tokenizer(tokenizer)
    corpus = load_corpus(data, tok, text_field)
    n = min(corpus.n_tokens, max_tokens or corpus.n_tokens)
    res = _evaluate(model, corpus.tokens, tok.eos_id, seq, batch, max_tokens=n, text_bytes=corpus.bytes_of(n))
    return {"tokens": res.tokens, "loss": res.loss, "perplexity": res.perplexity, "bits_per_byte": res.bits_per_byte}


__all__ = ["__version__", "build", "check", "evaluate", "export_hf", "export_onnx", "fmt", "import_hf", "load",
           "loads", "parse", "prune", "summary"]
