"""`archc prune`: a trained model made smaller *in spec terms* — a new, ordinary `.arch` file whose
op settings are the pruned widths (`heads`, `hidden`, `inner_width`, `experts`, `decays`, repeat
counts) plus the sliced weights that load into it.

The units come from the ops' prune rules (`prune.py`); their new settings are applied to the IR
by the `prune` pass (`archc/passes/prune.py`) and written into the spec: the call of each pruned
node is found by where it starts (the IR node's span) and rewritten with `archc/dsl/edit.py`
(the rewritten spec must lower to the pass's graph, checked), so the
rest of the file — constants, blocks, comments — stays as written, formatted by `archc fmt`. All
layers of a `repeat` share one call, so a per-op ratio keeps the same count at every layer
(which units each layer keeps is its own). Whole layers go by their loss when skipped (their
residual branches zeroed), and the repeat count drops.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from archc.backends.torch.model import ArchModel
from archc.backends.torch.prune import (
    PruneError,
    Sparsity,
    Units,
    choose,
    data_scores,
    magnitude_scores,
    magnitude_sparsify,
    new_params,
    prunable,
    renumbered_state,
    sliced_state,
)
from archc.dsl.edit import Where, set_call_params, set_repeat_count
from archc.dsl.fmt import format_module
from archc.dsl.parser import parse
from archc.files.output import Owned, check_folder, output_folder, write_text
from archc.ops.registry import REGISTRY


@dataclass
class PruneOptions:
    ratios: dict[str, float] = field(default_factory=dict)  # kind -> fraction of units removed
    importance: str = "magnitude"
    layers: int = 0  # whole layers removed
    magnitude: float = 0.0  # unstructured: fraction of weights zeroed
    magnitude_scope: str = "per-tensor"
    only: str | None = None  # glob over node ids
    scope: str = "per-op"  # or "global": each kind's ratio spent across all its ops


@dataclass
class PruneResult:
    text: str  # the pruned spec
    state: dict[str, Tensor]
    units: list[Units]
    layers_removed: list[str]
    params_before: int
    params_after: int
    sparsity: Sparsity | None = None
    model: ArchModel | None = None  # the pruned spec built, the weights loaded


def _positional(op: str) -> list[str]:
    """An op's positional parameters in order: its tensor inputs, then its schema's fields."""
    if op not in REGISTRY:
        return []
    rec = REGISTRY[op]
    return [*rec.inputs, *rec.params.model_fields]


def _site(n) -> Where:
    return (n.span.file, n.span.line, n.span.col)


def prune_spec(model: ArchModel, spec_path: str, spec_text: str, options: PruneOptions,
               batches: list[tuple[Tensor, Tensor]] | None = None) -> PruneResult:
    """`model` (built from `spec_text`, read from `spec_path`) pruned as `options` says; `batches`
    (input ids, labels) feed activation and Taylor importance and the layer ranking. Prune rules
    cut the canonical weights: a fused build is pruned as its `O0` rebuild (the same weights)."""
    from archc.backends.torch import optimize

    model = optimize(model, "O0")
    before = model.num_parameters()
    kinds = [k for k, r in options.ratios.items() if r > 0]
    units = prunable(model, kinds)
    if options.only:
        units = [u for u in units if fnmatch.fnmatchcase(u.node, options.only)]
    missing = [k for k in kinds if not any(u.axis.kind == k for u in units)]
    if missing:
        have = sorted({a.kind for n in model.graph.nodes.values() if REGISTRY[n.op].kind == "layer"
                       for a in _axes(model, n)})
        raise PruneError(f"no op of {model.graph.name} has {', '.join(missing)} to prune",
                         f"this spec can lose: {', '.join(have) or 'nothing structurally'}; --magnitude prunes "
                         "weights without changing shapes", code="ARC1203")
    if options.importance == "magnitude":
        magnitude_scores(model, units)
    else:
        if not batches:
            raise PruneError(f"{options.importance} importance needs calibration data", "pass --calibrate chars:64",
                             code="ARC1205")
        data_scores(model, units, batches, options.importance)
    sites = {n.id: _site(n) for n in model.graph.nodes.values()}
    choose(units, options.ratios, sites, options.scope)
    state = sliced_state(model, units) if units else {k: v.detach().clone() for k, v in model.state_dict().items()}
    edits = _edits(model, units)
    module = parse(spec_text, spec_path)
    module, found = set_call_params(module, edits, _positional)
    if set(edits) - found:
        where = sorted(set(edits) - found)[0]
        raise PruneError(f"the call at {where[0]}:{where[1]}:{where[2]} is not in {spec_path} (an included file?)",
                         "archc prune rewrites the spec file itself; inline the block to prune it", code="ARC1204")
    if units:
        _check_against_the_ir_pass(model, units, format_module(module), spec_path)
    removed: list[str] = []
    if options.layers:
        module, state, removed = _drop_layers(model, module, state, options.layers, batches, spec_path)
    text = format_module(module)
    pruned = _load(text, spec_path, state)
    sparsity = magnitude_sparsify(pruned, options.magnitude, options.magnitude_scope, options.only) \
        if options.magnitude else None
    state = {k: v.detach().clone() for k, v in pruned.state_dict().items()}
    return PruneResult(text, state, units, removed, before, pruned.num_parameters(), sparsity, pruned)


def _check_against_the_ir_pass(model: ArchModel, units: list[Units], text: str, spec_path: str) -> None:
    """The rewritten spec must lower to the graph the IR's `prune` pass makes from the same plan
    (`archc/passes/prune.py`): node for node, the same op, settings and type."""
    from archc.frontend import loads
    from archc.passes.manager import run

    by_pass = run(model.graph, ["prune"], {"prune": new_params(units)}).graph
    by_text = loads(text, spec_path).graph
    a, b = by_pass.to_text().splitlines(), by_text.to_text().splitlines()
    if a != b:
        diff = next((f"{x.strip()}  vs  {y.strip()}" for x, y in zip(a, b, strict=False) if x != y),
                    f"{len(a)} vs {len(b)} lines")
        raise PruneError(f"the rewritten spec and the IR prune pass disagree: {diff}",
                         "this is a bug in archc prune; please report it with the spec", code="ARC1201")


def _axes(model: ArchModel, n) -> list:
    from archc.ops.registry import CannotPrune

    op = REGISTRY[n.op]
    try:
        return list(op.prune(op.params(**n.params), model.graph.input_types(n)))
    except CannotPrune:
        return []


def _edits(model: ArchModel, units: list[Units]) -> dict[Where, dict[str, Any]]:
    """Call site -> the settings to write; every node of a site must agree."""
    per_node = new_params(units)
    edits: dict[Where, dict[str, Any]] = {}
    owner: dict[Where, str] = {}
    for nid, params in per_node.items():
        n = model.graph.nodes[nid]
        where = _site(n)
        if "expert" in params:  # only the nested settings that changed
            params = {**params, "expert": {"params": {k: v for k, v in params["expert"]["params"].items()
                                                      if n.params["expert"]["params"].get(k) != v}}}
        if where in edits and edits[where] != params:
            raise PruneError(f"`{nid}` and `{owner[where]}` come from one call ({where[0]}:{where[1]}:{where[2]}) "
                             "but were pruned to different widths", "prune them with one ratio", n, code="ARC1206")
        edits[where], owner[where] = params, nid
    return edits


def _load(text: str, path: str, state: dict[str, Tensor]) -> ArchModel:
    """The pruned spec built, with the sliced weights loaded (strictly: every key and shape must
    fit, which checks the rewrite against the slicing)."""
    from archc.backends.torch import build
    from archc.frontend import loads

    model = build(loads(text, path).graph, pipeline="O0")
    model.load_state_dict(state)
    return model


# -- whole layers --------------------------------------------------------------------------------


def _stacks(model: ArchModel) -> dict[str, list[str]]:
    """Stack name -> its layer prefixes in order (`layers` -> [layers.0, layers.1, …])."""
    out: dict[str, list[str]] = {}
    for nid in model.graph.nodes:
        m = re.match(r"^(.+)\.(\d+)\.", nid)
        if m:
            out.setdefault(m.group(1), [])
            prefix = f"{m.group(1)}.{m.group(2)}"
            if prefix not in out[m.group(1)]:
                out[m.group(1)].append(prefix)
    return {k: v for k, v in out.items() if len(v) > 1}


def _layer_loss(model: ArchModel, prefix: str | None, batches: list[tuple[Tensor, Tensor]]) -> float:
    """The mean loss with the layer at `prefix` skipped: its residual branches' output
    projections (the declared weights of role `residual`) zeroed, which makes a pre-norm residual layer
    the identity."""
    saved = []
    with torch.no_grad():
        if prefix is not None:
            for n in model.graph.nodes.values():
                if n.id.startswith(prefix + "."):
                    mod = model.get_submodule(n.id) if REGISTRY[n.op].kind == "layer" else None
                    for w in mod.residual_weights if mod is not None else ():
                        p = mod.get_parameter(w)
                        saved.append((p, p.detach().clone()))
                        p.zero_()
        losses = [float(model(ids, labels=labels).loss) for ids, labels in batches]
        for p, v in saved:
            p.copy_(v)
    return sum(losses) / len(losses)


def _drop_layers(model: ArchModel, module, state: dict[str, Tensor], count: int, batches, spec_path: str):
    stacks = _stacks(model)
    if len(stacks) != 1:
        raise PruneError(f"--layers needs one layer stack, {model.graph.name} has {len(stacks)}",
                         "prune the layers of a spec with one repeat(...)", code="ARC1207")
    name, prefixes = next(iter(stacks.items()))
    if count >= len(prefixes):
        raise PruneError(f"--layers {count} would remove all {len(prefixes)} layers of `{name}`", code="ARC1207")
    if not batches:
        raise PruneError("--layers ranks layers by the loss without each: it needs calibration data",
                         "pass --calibrate chars:64", code="ARC1205")
    model.eval()
    base = _layer_loss(model, None, batches)
    cost = {p: _layer_loss(model, p, batches) - base for p in prefixes}
    removed = sorted(sorted(prefixes, key=lambda p: cost[p])[:count], key=prefixes.index)
    call = _repeat_call(module, name, len(prefixes), spec_path)
    module = set_repeat_count(module, call, len(prefixes) - count)
    kept = [p for p in prefixes if p not in removed]
    rename = {f"{old}.": f"{name}.{i}." for i, old in enumerate(kept)}
    return module, renumbered_state(state, [r + "." for r in removed], rename), removed


def _repeat_call(module, stack: str, n: int, path: str) -> Where:
    """Where the `repeat(n, …)` making stack `stack` starts in the spec."""
    from archc.dsl import ast

    found: list[Where] = []

    def visit(node: Any) -> None:
        if isinstance(node, tuple):
            for x in node:
                visit(x)
            return
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "repeat":
            name = next((kw.value.value for kw in node.kwargs if kw.name == "name" and isinstance(kw.value, ast.String)),
                        "layers")
            if name == stack:
                found.append((node.span.file, node.span.line, node.span.col))
        import dataclasses

        if dataclasses.is_dataclass(node) and not isinstance(node, ast.Comment):
            for f in dataclasses.fields(node):
                if f.name != "span":
                    visit(getattr(node, f.name))

    visit(module.items)
    if len(found) != 1:
        raise PruneError(f"the stack `{stack}` is not one `repeat(...)` call of {path}",
                         "--layers prunes stacks written as repeat(n, block)", code="ARC1207")
    return found[0]


# -- the folder `archc prune` writes ----------------------------------------------------------


def experts_ratio(model: ArchModel, experts: float) -> float:
    """`--experts` as a fraction of each MoE's experts: a fraction (< 1) as given; a count (≥ 1)
    removes that many at every MoE, and must leave at least one (ARC1203)."""
    if experts < 1:
        return experts
    moes = [n for n in model.graph.nodes.values() if n.op == "moe"]
    if not moes:
        raise PruneError(f"no op of {model.graph.name} has experts to prune",
                         "--experts prunes moe(...) ops; prune heads or FFN channels instead", code="ARC1203")
    have = min(int(n.params["experts"]) for n in moes)
    if experts >= have:
        raise PruneError(f"--experts {experts:g}: the MoE layers have {have} experts; at most {have - 1} can go",
                         "pass a smaller count, or a fraction such as 0.25", node=moes[0], code="ARC1203")
    return experts / int(moes[0].params["experts"])


def importance_batches(source: str, count: int, seq: int, vocab: int, seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    """(ids, labels) batches of 8 sequences for activation / Taylor importance and `layers`, drawn
    by `tasks.token_sequences` (a task by name or windows of a text file; ValueError on bad input)."""
    from archc.backends.torch.tasks import token_sequences

    ids = token_sequences(source, count, seq, vocab, seed)
    return [(ids[i:i + 8], ids[i:i + 8]) for i in range(0, len(ids), 8)]


def pruned_files(spec_path: str | Path) -> Owned:
    """What a prune of `spec_path` writes: the only files `--force` replaces."""
    return Owned((f"{Path(spec_path).stem}-pruned.arch", "weights.safetensors", "prune.json"), marker="prune.json",
                 what="pruned spec")


@dataclass
class PrunedFolder:
    spec: Path
    weights: Path
    report: dict
    result: PruneResult


def prune_into_folder(model: ArchModel, spec_path: str | Path, options: PruneOptions, out: str | Path,
                      force: bool = False, batches: list[tuple[Tensor, Tensor]] | None = None,
                      weights_from: str = "random init") -> PrunedFolder:
    """`prune_spec`, then the new spec, its weights and `prune.json` (what went, parameter counts,
    what `archc summary` counts for the new spec) written to `out` together, in one transaction
    (`archc.files.output`): an existing prune there is replaced only with `force`, other files stay."""
    from archc.backends.torch.checkpoint import save_weights
    from archc.frontend import load, read_spec
    from archc.ir.cost import CostCtx
    from archc.passes.estimate_cost import estimate_cost

    owned = pruned_files(spec_path)
    folder = check_folder(out, owned, force)  # before the work, not after
    spec_name, weights_name = owned.files[0], owned.files[1]
    res = prune_spec(model, str(spec_path), read_spec(spec_path), options, batches)
    with output_folder(folder, owned, force) as txn:
        write_text(txn.stage / spec_name, res.text)
        save_weights(res.model, txn.stage / weights_name, {"spec": spec_name, "pruned_from": weights_from})
        summary = estimate_cost(load(txn.stage / spec_name).graph, CostCtx(seq=2048, batch=1, dtype="bf16"))
        report = {
            "spec": str(folder / spec_name), "weights": str(folder / weights_name), "from": str(spec_path),
            "importance": options.importance, "params_before": res.params_before, "params_after": res.params_after,
            "summary_params": int(summary.total.params),
            "units": [{"node": u.node, "kind": u.axis.kind, "units": u.axis.units, "kept": len(u.keep),
                       "removed": u.removed, "note": u.axis.note} for u in res.units],
            "layers_removed": res.layers_removed,
            "sparsity": None if res.sparsity is None else {
                "fraction": res.sparsity.fraction, "zeros": res.sparsity.zeros, "of": res.sparsity.total,
                "tensors": res.sparsity.weights, "model_params": res.sparsity.model_total},
        }
        write_text(txn.stage / "prune.json", json.dumps(report, indent=2) + "\n")
    return PrunedFolder(folder / spec_name, folder / weights_name, report, res)


__all__ = ["PruneOptions", "PruneResult", "PrunedFolder", "experts_ratio", "importance_batches",
           "prune_into_folder", "prune_spec", "pruned_files"]
