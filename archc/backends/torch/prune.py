"""Structured and unstructured pruning of a built model, from the ops' prune rules.

Each op record's prune rule (`archc.ops.registry.PruneAxis`) says, in index arithmetic, which
slices of its weights make up one unit (a head, an FFN channel, an inner channel, an expert);
this module scores the units, chooses which to keep, and produces the three things `archc prune`
needs: the masked model (the original with the removed units zeroed — the pruned model's
definition, tested), the sliced weights that load into the smaller spec, and the new parameters
of every pruned node (the spec rewrite is `archc/dsl/edit.py`'s).

Importance (per unit, higher is kept):
* `magnitude`: the L2 norm of the unit's weights (its slices and whole submodules);
* `activation`: the mean |activation| of the unit's channels at the input of the op's output
  projection on calibration batches (for an expert: the mean routing weight it receives);
* `taylor`: the first-order estimate of the loss change when the unit is zeroed, |Σ a·∂L/∂a|
  over tokens and the unit's channels (Molchanov et al., 2019; for an expert: on its router logit).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from archc.backends.torch.model import ArchModel
from archc.ops.registry import (
    QUANTIZED_BY_DEFAULT,
    REGISTRY,
    CannotPrune,
    PruneAxis,
    unit_slices,
)
from archc.passes.facts import graph_weights

Importance = Literal["magnitude", "activation", "taylor"]
IMPORTANCE: tuple[str, ...] = ("magnitude", "activation", "taylor")


@dataclass
class Units:
    """One node's units of one kind: the rule, their scores and the decision."""

    node: str
    op: str
    axis: PruneAxis
    scores: Tensor | None = None
    keep: list[int] = field(default_factory=list)

    @property
    def removed(self) -> list[int]:
        kept = set(self.keep)
        return [u for u in range(self.axis.units) if u not in kept]


class PruneError(Exception):
    def __init__(self, message: str, hint: str | None = None, node: Any = None, code: str = "ARC1201") -> None:
        super().__init__(message)
        self.message, self.hint, self.node, self.code = message, hint, node, code


def prunable(model: ArchModel, kinds: Iterable[str]) -> list[Units]:
    """Every node's units of the kinds asked for; an op that has such units but cannot lose them
    as configured is a `PruneError` at its node. Higher-order ops' bodies are not entered."""
    kinds = set(kinds)
    out = []
    for n in model.graph.nodes.values():
        op = REGISTRY[n.op]
        if op.kind != "layer":
            continue
        try:
            axes = op.prune(op.params(**n.params), model.graph.input_types(n))
        except CannotPrune as e:
            if kinds & set(e.kinds):
                raise PruneError(f"`{n.op}` at `{n.id}` cannot be pruned: {e}", "leave this op out (--only)",
                                 n, code="ARC1202") from None
            continue
        mine = [Units(n.id, n.op, a) for a in axes if a.kind in kinds]
        if {"heads", "kv_heads"} <= {u.axis.kind for u in mine}:
            raise PruneError(f"`{n.op}` at `{n.id}`: --heads (query heads in every group) and --kv-heads (whole "
                             "groups) both change its head count", "run archc prune twice: once with each", n,
                             code="ARC1202")
        out.extend(mine)
    return out


# -- importance ---------------------------------------------------------------------------------


def magnitude_scores(model: ArchModel, units: list[Units]) -> None:
    for u in units:
        mod = model.get_submodule(u.node)
        scores = torch.zeros(u.axis.units)
        for i in range(u.axis.units):
            total = 0.0
            for name, axis, idx in unit_slices(u.axis, i):
                w = mod.get_parameter(name).detach().float()
                total += float(w.index_select(axis, torch.tensor(idx)).pow(2).sum())
            for sub in u.axis.modules(i):
                total += sum(float(p.detach().float().pow(2).sum()) for p in mod.get_submodule(sub).parameters())
            scores[i] = total ** 0.5
        u.scores = scores


def data_scores(model: ArchModel, units: list[Units], batches: list[tuple[Tensor, Tensor]], method: Importance) -> None:
    """Activation or Taylor scores from forward (and backward) passes over `batches`."""
    acc: dict[tuple[str, str], Tensor] = {}  # (node, submodule) -> per-channel sums
    count: dict[tuple[str, str], int] = {}
    hooks = []
    targets: dict[tuple[str, str], tuple[nn.Module, bool]] = {}
    for u in units:
        mods = {u.axis.activation(i)[0] for i in range(u.axis.units)} if u.axis.kind != "experts" else {"router"}
        for m in mods:
            targets[(u.node, m)] = (model.get_submodule(u.node).get_submodule(m), u.axis.kind == "experts")

    def add(key: tuple[str, str], value: Tensor) -> None:
        acc[key] = acc.get(key, 0) + value.detach().float()
        count[key] = count.get(key, 0) + 1

    for key, (mod, on_output) in targets.items():
        top_k = REGISTRY[model.graph.nodes[key[0]].op].params(**model.graph.nodes[key[0]].params).top_k \
            if on_output else 0

        def hook(m, inputs, output, key=key, on_output=on_output, top_k=top_k):
            x = output if on_output else inputs[0]
            if method == "activation":
                if on_output:  # router logits -> the top-k gates each expert receives
                    probs = x.float().softmax(-1)
                    gates = torch.zeros_like(probs).scatter(-1, probs.topk(top_k, -1).indices,
                                                            probs.topk(top_k, -1).values)
                    add(key, gates.reshape(-1, gates.shape[-1]).mean(0))
                else:
                    add(key, x.abs().reshape(-1, x.shape[-1]).mean(0))
            elif x.requires_grad:
                x.register_hook(lambda g, x=x, key=key: add(key, (x.detach() * g).reshape(-1, x.shape[-1]).sum(0)))

        hooks.append(mod.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        for ids, labels in batches:
            if method == "activation":
                with torch.no_grad():
                    model(ids)
            else:
                model.zero_grad(set_to_none=True)
                model(ids, labels=labels).loss.backward()
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    for u in units:
        scores = torch.zeros(u.axis.units)
        for i in range(u.axis.units):
            m, ch = u.axis.activation(i) if u.axis.kind != "experts" else ("router", [i])
            v = acc.get((u.node, m))
            if v is None:
                continue
            sel = v[ch] if ch is not None else v
            scores[i] = float(sel.abs().sum()) if method == "taylor" else float(sel.sum()) / count[(u.node, m)]
        u.scores = scores


# -- choice -------------------------------------------------------------------------------------


def global_counts(units: list[Units], ratios: dict[str, float], call_site: dict[str, tuple]) -> dict[tuple, int]:
    """Units kept per group at each call site when a kind's ratio is spent globally: every site's
    units (scores averaged over its nodes, divided by their mean so that ops of different scale
    compare) are ranked together, and the lowest ratio of all units in the model go. All nodes of
    one call keep one count (one call writes one width)."""
    out: dict[tuple, int] = {}
    for kind, ratio in ratios.items():
        sites: dict[tuple, list[Units]] = {}
        for u in units:
            if u.axis.kind == kind:
                sites.setdefault(call_site[u.node], []).append(u)
        pooled = []  # (normalized score, site, nodes at the site)
        for site, us in sites.items():
            mean = torch.stack([u.scores for u in us]).mean(0)
            g = us[0].axis.groups
            per_group = mean.view(g, -1).mean(0)  # a unit position's score across the groups
            norm = per_group / per_group.mean().clamp_min(1e-12)
            pooled += [(float(v), site, len(us) * g) for v in norm]
        total = sum(w for _, _, w in pooled)
        budget = ratio * total
        removed: dict[tuple, int] = {}
        for _, site, weight in sorted(pooled, key=lambda t: t[0]):
            per = sites[site][0].axis.units // sites[site][0].axis.groups
            if budget < weight / 2 or removed.get(site, 0) >= per - 1:
                continue
            removed[site] = removed.get(site, 0) + 1
            budget -= weight
        for site, us in sites.items():
            per = us[0].axis.units // us[0].axis.groups
            out[(site, kind)] = per - removed.get(site, 0)
    return out


def choose(units: list[Units], ratios: dict[str, float], call_site: dict[str, tuple], scope: str = "per-op") -> None:
    """Keep the best 1 − ratio of each node's units (a multiple of its groups, each group keeping
    the same number, at least one) — per op, or with the ratio spent across the whole model
    (`scope="global"`, `global_counts`). A rule whose new parameters name the kept units
    themselves (`same_units`) keeps the same units at every node of one call site, by summed score."""
    by_site: dict[tuple, list[Units]] = {}
    for u in units:
        if u.axis.same_units:
            by_site.setdefault((call_site[u.node], u.axis.kind), []).append(u)
    counts = global_counts(units, ratios, call_site) if scope == "global" else {}
    for u in units:
        n, g = u.axis.units, u.axis.groups
        per = n // g
        keep_per = counts.get((call_site[u.node], u.axis.kind)) or max(1, per - round(ratios[u.axis.kind] * per))
        scores = u.scores
        if u.axis.same_units:
            scores = torch.stack([v.scores for v in by_site[(call_site[u.node], u.axis.kind)]]).sum(0)
        keep = []
        for k in range(g):
            group = scores[k * per:(k + 1) * per]
            best = torch.argsort(group, descending=True, stable=True)[:keep_per]
            keep.extend(int(k * per + i) for i in best)
        u.keep = sorted(keep)


# -- masking, slicing, parameters -----------------------------------------------------------------


def masked(model: ArchModel, units: list[Units], layers: Iterable[str] = ()) -> ArchModel:
    """In place: the removed units' weights zeroed; removed experts are masked on the router
    (their logits −∞, through a forward hook) since zero weights cannot leave the top-k; removed
    layers have their residual branches' output projections zeroed (the identity, pre-norm)."""
    with torch.no_grad():
        for prefix in layers:
            for n in model.graph.nodes.values():
                if n.id.startswith(prefix + ".") and REGISTRY[n.op].kind == "layer":
                    mod = model.get_submodule(n.id)
                    for w in mod.residual_weights:
                        mod.get_parameter(w).zero_()
        for u in units:
            mod = model.get_submodule(u.node)
            for i in u.removed:
                for name, axis, idx in unit_slices(u.axis, i):
                    mod.get_parameter(name).index_fill_(axis, torch.tensor(idx), 0.0)
            if u.axis.kind == "experts" and u.removed:
                dead = torch.tensor(u.removed)

                def hook(m, inputs, output, dead=dead):
                    return output.index_fill(-1, dead, float("-inf"))

                mod.get_submodule("router").register_forward_hook(hook)
    return model


def sliced_state(model: ArchModel, units: list[Units]) -> dict[str, Tensor]:
    """The state dict of the pruned model: every pruned node's weights without the removed units'
    slices (and submodules, later ones renumbered), then each rule's rescale."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    by_node: dict[str, list[Units]] = {}
    for u in units:
        by_node.setdefault(u.node, []).append(u)
    for node, us in by_node.items():
        # hidden units inside experts before the experts themselves (their slices name experts.e.*)
        for u in sorted(us, key=lambda u: u.axis.kind == "experts"):
            drop: dict[str, dict[int, set[int]]] = {}
            for i in u.removed:
                for name, axis, idx in unit_slices(u.axis, i):
                    drop.setdefault(name, {}).setdefault(axis, set()).update(idx)
            for name, axes in drop.items():
                key = f"{node}.{name}"
                t = state[key]
                for axis, idx in axes.items():
                    keep = torch.tensor([i for i in range(t.shape[axis]) if i not in idx])
                    t = t.index_select(axis, keep)
                state[key] = t
            gone = [m for i in u.removed for m in u.axis.modules(i)]
            if gone:
                state = _renumbered(state, node, u, gone)
            for name, factor in u.axis.scale(len(u.keep)).items():
                state[f"{node}.{name}"] = state[f"{node}.{name}"] * factor
    return state


def _renumbered(state: dict[str, Tensor], node: str, u: Units, gone: list[str]) -> dict[str, Tensor]:
    """Drop the removed submodules (`experts.3`) and renumber the kept ones in order."""
    kept_mods = [m for i in u.keep for m in u.axis.modules(i)]
    rename = {f"{node}.{old}.": f"{node}.{old.rsplit('.', 1)[0]}.{i}." for i, old in enumerate(kept_mods)}
    return renumbered_state(state, [f"{node}.{g}." for g in gone], rename)


def renumbered_state(state: dict[str, Tensor], dropped: list[str], rename: dict[str, str]) -> dict[str, Tensor]:
    """The state without the keys under the `dropped` prefixes, the rest moved from each old
    prefix of `rename` to its new one (removed experts, removed layers: the kept ones renumbered)."""
    out = {}
    for k, v in state.items():
        if any(k.startswith(d) for d in dropped):
            continue
        for old, new in rename.items():
            if k.startswith(old):
                k = new + k[len(old):]
                break
        out[k] = v
    return out


def new_params(units: list[Units]) -> dict[str, dict[str, Any]]:
    """node id -> its changed parameters (both kinds of a MoE merged)."""
    out: dict[str, dict[str, Any]] = {}
    for u in units:
        out.setdefault(u.node, {}).update(u.axis.params(u.keep))
    return out


# -- unstructured ---------------------------------------------------------------------------------


@dataclass
class Sparsity:
    weights: int  # tensors pruned
    zeros: int
    total: int  # elements of the pruned tensors
    model_total: int  # elements of all parameters

    @property
    def fraction(self) -> float:
        return self.zeros / max(1, self.total)


def magnitude_sparsify(model: ArchModel, ratio: float, scope: str = "per-tensor",
                       only: str | None = None) -> Sparsity:
    """Unstructured magnitude pruning, in place: the `ratio` smallest |w| of each matrix whose
    class is quantized by default (projections, FFNs, experts, embeddings, heads — the weights
    the edge format stores compressed), per tensor or over all of them (`global`). Shapes do not
    change: the result is reported as sparsity."""
    declared = graph_weights(model.graph)
    params = [(k, p) for k, p in model.named_parameters()
              if p.dim() >= 2 and k in declared and declared[k].cls in QUANTIZED_BY_DEFAULT
              and (only is None or fnmatch.fnmatchcase(k, only))]
    with torch.no_grad():
        if scope == "global":
            flat = torch.cat([p.detach().abs().flatten() for _, p in params])
            k = int(ratio * flat.numel())
            threshold = flat.kthvalue(max(1, k)).values if k else torch.tensor(-1.0)
            for _, p in params:
                p.masked_fill_(p.abs() <= threshold, 0.0)
        else:
            for _, p in params:
                k = int(ratio * p.numel())
                if k:
                    threshold = p.detach().abs().flatten().kthvalue(k).values
                    p.masked_fill_(p.abs() <= threshold, 0.0)
    zeros = sum(int((p == 0).sum()) for _, p in params)
    return Sparsity(len(params), zeros, sum(p.numel() for _, p in params),
                    sum(p.numel() for p in model.parameters()))


__all__ = ["IMPORTANCE", "PruneError", "Sparsity", "Units", "choose", "data_scores", "magnitude_scores",
           "magnitude_sparsify", "masked", "new_params", "prunable", "renumbered_state", "sliced_state"]
