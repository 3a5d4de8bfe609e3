"""The planner's search: every layout the devices, the batch and the ops' rules allow, costed, the
fastest that fits chosen, runners-up kept with the reason each is slower.

Constraints come from the spec's `parallel { }` section and from a plan string (`tp=2,fsdp=2`,
the CLI's `--plan`): a degree given is fixed. Degrees the ops' rules cannot split (3 heads over 2
ranks) are still allowed — the op is then replicated at that degree, and the plan lists it —
because a model is never refused for one odd layer; a degree that splits nothing is never faster.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from archc.ir.cost import CostCtx
from archc.ir.graph import Graph
from archc.parallel.cluster import Cluster, Workload
from archc.parallel.estimate import Estimate, Layout, Sums, balance, estimate
from archc.parallel.profile import Unit, units

#: Keys of a plan string and of the `parallel { }` section's degrees.
PLAN_KEYS = ("tp", "cp", "pp", "dp", "ep", "fsdp", "mbs", "v", "schedule", "checkpoint", "zero")


class PlanError(Exception):
    """No layout satisfies the constraints, or none fits; `figure` is the number that failed."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


def parse_plan(text: str) -> dict[str, Any]:
    """`tp=2,fsdp=2,pp=2,v=2,mbs=1,schedule=gpipe,checkpoint` -> constraints. `fsdp=N` is data
    parallelism of degree N with ZeRO-3 sharding; `dp=N` replicates (add `zero=zero1` or `fsdp`
    to shard)."""
    out: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, _, value = item.partition("=")
        key = key.strip().lower()
        if key not in PLAN_KEYS:
            raise PlanError(f"unknown plan key `{key}`", f"keys: {', '.join(PLAN_KEYS)}")
        if key == "checkpoint":
            out[key] = value.strip().lower() not in ("0", "false", "no", "off")
        elif key in ("schedule", "zero"):
            allowed = ("1f1b", "interleaved", "gpipe") if key == "schedule" else ("ddp", "zero1", "fsdp")
            if value not in allowed:
                raise PlanError(f"`{key}={value}`: expected one of {', '.join(allowed)}")
            out[key] = value
        else:
            try:
                n = int(value)
            except ValueError:
                raise PlanError(f"`{item}`: {key} takes a positive integer, e.g. {key}=2") from None
            if n < 1:
                raise PlanError(f"`{item}`: {key} must be at least 1")
            if key == "fsdp":
                out["dp"], out["zero"] = n, "fsdp"
            else:
                out[key] = n
    return out


def section_constraints(graph: Graph) -> dict[str, Any]:
    """The spec's `parallel { }` section as constraints (devices and memory are the cluster's)."""
    sec = graph.sections.get("parallel") or {}
    names = {"tensor": "tp", "pipeline": "pp", "data": "dp", "expert": "ep", "sequence": "cp"}
    out: dict[str, Any] = {names[k]: v for k, v in sec.items() if k in names and v is not None}
    if sec.get("fsdp"):
        out["zero"] = "fsdp"
    return out


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@dataclass
class ParallelPlan:
    """The planner's answer: the chosen layout's estimate, runners-up with why they lose, and what
    the search saw."""

    model: str
    cluster: Cluster
    work: Workload
    best: Estimate
    runners_up: list[tuple[Estimate, str]]
    considered: int
    fitting: int
    #: the layer stages Megatron's split by layer count would give, and its slowest stage's
    #: compute over the cost-balanced split's (1.0: no difference)
    count_split_ratio: float
    constraints: dict[str, Any] = field(default_factory=dict)
    #: whose activation figures: "fused" (the cost model: what fused kernels keep) or "eager"
    #: (archc's PyTorch modules, measured: archc/backends/torch/activation_profile.py)
    activations: str = "fused"

    def to_json(self) -> dict[str, Any]:
        def est(e: Estimate) -> dict[str, Any]:
            L = e.layout
            return {"tp": L.tp, "cp": L.cp, "pp": L.pp, "dp": L.dp, "ep": L.ep, "zero": L.zero,
                    "microbatch": L.mbs, "microbatches": e.microbatches, "virtual_stages": L.virtual,
                    "schedule": L.schedule, "activation_checkpointing": L.checkpoint,
                    "memory_bytes": e.memory, "time_s": e.time, "tokens_per_s": e.tokens / e.step,
                    "model_tflops_per_device": e.tflops(self.cluster.devices),
                    "mfu": e.tflops(self.cluster.devices) * 1e12 / self.cluster.device.peak,
                    # hardware FLOPs utilization: recomputation counted (Korthikanti et al. 2022's HFU)
                    "hfu": e.hardware_flops / e.step / self.cluster.devices / self.cluster.device.peak,
                    "stages": e.stages, "replicated_ops": e.replicated}

        c = self.cluster
        return {"model": self.model,
                "cluster": {"device": c.device.name, "devices": c.devices, "per_node": c.per_node,
                            "memory_bytes": c.device.memory, "peak_flops": c.device.peak,
                            "intra_bandwidth": c.device.intra, "inter_bandwidth": c.device.inter,
                            "efficiency": c.efficiency},
                "workload": {"seq": self.work.seq, "global_batch": self.work.global_batch, "dtype": self.work.dtype},
                "constraints": self.constraints, "activations": self.activations, "considered": self.considered, "fitting": self.fitting,
                "count_split_ratio": self.count_split_ratio,
                "plan": est(self.best),
                "runners_up": [{**est(e), "why_not": why} for e, why in self.runners_up]}


def _order(fitting: list[Estimate]) -> list[Estimate]:
    """Fastest first; among those as fast as the fastest (within 0.5%), the one with fewer kinds of
    parallelism (simpler to run), then less memory."""
    fitting = sorted(fitting, key=lambda e: e.step)
    limit = fitting[0].step * 1.005

    def kinds(e: Estimate) -> tuple[int, float]:
        L = e.layout
        return sum(d > 1 for d in (L.tp, L.cp, L.pp, L.ep)) + (L.zero != "ddp") + L.checkpoint, e.memory["total"]

    near = sorted((e for e in fitting if e.step <= limit), key=kinds)
    return near + [e for e in fitting if e.step > limit]


def _why_slower(e: Estimate, best: Estimate) -> str:
    """The time component that grew most against the chosen plan."""
    ratio = e.step / best.step
    if ratio < 1.005:
        return (f"as fast (within 0.5%), with more kinds of parallelism or memory "
                f"({e.memory['total'] / 1e9:.1f} GB vs {best.memory['total'] / 1e9:.1f} GB)")
    diffs = {k: e.time[k] - best.time[k] for k in e.time if k != "total"}
    worst = max(diffs, key=lambda k: diffs[k])
    return f"{ratio:.2f}× the step time: {worst} {e.time[worst]:.3g} s vs {best.time[worst]:.3g} s"


def layouts(model_units: list[Unit], cluster: Cluster, work: Workload, fixed: dict[str, Any]) -> list[Layout]:
    """Every layout the constraints and the model allow."""
    n = cluster.devices
    experts = max((_experts(info) for u in model_units for info in u.nodes if info.top_k), default=1)
    context_ok = not any(u.at(1, 1).context_refused for u in model_units)
    out = []
    for tp in ([fixed["tp"]] if "tp" in fixed else [d for d in _divisors(cluster.per_node)]):
        for cp in ([fixed["cp"]] if "cp" in fixed else [1, 2, 4, 8, 16] if context_ok else [1]):
            if n % (tp * cp) or (work.seq % (2 * cp) and cp > 1):
                continue
            rest = n // (tp * cp)
            for pp in ([fixed["pp"]] if "pp" in fixed else [p for p in _divisors(rest) if p <= len(model_units)]):
                if rest % pp:
                    continue
                dp = rest // pp
                if fixed.get("dp", dp) != dp:
                    continue
                for ep in ([fixed["ep"]] if "ep" in fixed else [e for e in _divisors(dp) if experts % e == 0]):
                    if dp % ep or experts % ep:
                        continue
                    for mbs in ([fixed["mbs"]] if "mbs" in fixed else (1, 2, 4, 8)):
                        if work.global_batch % (dp * mbs):
                            continue
                        m = work.global_batch // (dp * mbs)
                        if pp > 1 and m < pp:
                            continue
                        vs = [fixed["v"]] if "v" in fixed else ([1, 2, 4, 8] if pp > 1 else [1])
                        for v in vs:
                            if pp * v > len(model_units) or (v > 1 and m % pp):
                                continue
                            schedule = fixed.get("schedule") or ("none" if pp == 1 else
                                                                 "interleaved" if v > 1 else "1f1b")
                            zeros = [fixed["zero"]] if "zero" in fixed else (
                                ("ddp", "zero1", "fsdp") if dp * cp > 1 else ("ddp",))
                            for zero in zeros:
                                for ck in ([fixed["checkpoint"]] if "checkpoint" in fixed else (False, True)):
                                    out.append(Layout(tp, cp, pp, dp, ep, mbs, v, schedule, zero, ck))
    return out


def _experts(info: Any) -> int:
    """A MoE node's routed experts (the number of `experts.N.` weight groups)."""
    return len({w.name.split(".")[1] for w in info.weights if w.name.startswith("experts.")}) or 1


def plan(graph: Graph, cluster: Cluster, work: Workload, constraints: dict[str, Any] | None = None,
         keep: int = 3, activations: Mapping[int, Mapping[str, float]] | None = None) -> ParallelPlan:
    """The fastest layout of `graph` on `cluster` for `work` that fits in memory, with `keep`
    runners-up. PlanError when the constraints allow no layout or none fits. `activations`: each
    node's activation bytes per token on a rank, by tensor-parallel degree, in place of the cost
    model's (the eager modules' profiles, `archc.backends.torch.activation_profile`)."""
    fixed = {**section_constraints(graph), **(constraints or {})}
    model_units = units(graph, CostCtx(seq=work.seq, batch=1, dtype=work.dtype), activations)
    if "cp" in fixed and fixed["cp"] > 1:
        refused = [r for u in model_units for r in u.at(1, 1).context_refused]
        if refused:
            raise PlanError(f"context parallelism cannot split this model's sequence: {refused[0]}",
                            "drop cp, or replace the op")
    candidates = layouts(model_units, cluster, work, fixed)
    if not candidates:
        raise PlanError(_no_layout(cluster, work, fixed, len(model_units)),
                        "relax the fixed degrees, or change --devices / --global-batch")
    balanced: dict[tuple[int, int, int], list[int]] = {}
    sums: dict[tuple[int, int], Sums] = {}
    estimates = []
    fits_whole: set[Layout] = set()  # layouts that fit without checkpointing: checkpointing only slows them
    for L in sorted(candidates, key=lambda c: c.checkpoint):
        if L.checkpoint and replace(L, checkpoint=False) in fits_whole:
            continue
        key = (L.tp, L.ep, L.pp * L.virtual)
        if key not in balanced:
            balanced[key] = _cuts(model_units, L)
        if (L.tp, L.ep) not in sums:
            sums[L.tp, L.ep] = Sums(model_units, L.tp, L.ep)
        e = estimate(model_units, L, cluster, work, balanced[key], sums[L.tp, L.ep])
        estimates.append(e)
        if e.fits and not L.checkpoint:
            fits_whole.add(L)
    fitting = [e for e in estimates if e.fits]
    if not fitting:
        least = min(estimates, key=lambda e: e.memory["total"])
        raise PlanError(
            f"no layout fits in {cluster.device.memory / 1e9:.1f} GB per device: the smallest needs "
            f"{least.memory['total'] / 1e9:.1f} GB ({least.layout.text()}, "
            f"{'checkpointing' if least.layout.checkpoint else 'no checkpointing'}, {least.layout.zero})",
            "more devices, more memory per device, a shorter --seq or a smaller model")
    fitting = _order(fitting)
    best = fitting[0]
    runners: list[tuple[Estimate, str]] = []
    seen = {_degrees(best.layout)}
    for e in fitting[1:]:
        if _degrees(e.layout) in seen:
            continue
        seen.add(_degrees(e.layout))
        runners.append((e, _why_slower(e, best)))
        if len(runners) == keep:
            break
    ratio = _count_split_ratio(model_units, best, cluster, work)
    return ParallelPlan(graph.name, cluster, work, best, runners, len(estimates), len(fitting), ratio, fixed,
                        "fused" if activations is None else "eager")


def _degrees(L: Layout) -> tuple[int, ...]:
    return L.tp, L.cp, L.pp, L.dp, L.ep


def _cuts(model_units: list[Unit], L: Layout) -> list[int]:
    """Stage cuts balanced by each unit's training FLOPs on a rank at this layout (a hybrid's
    attention, Mamba and MoE layers differ)."""
    k = L.pp * L.virtual
    if k == 1:
        return [len(model_units)]
    return balance([_unit_cost(u, L) for u in model_units], k)


def _unit_cost(u: Unit, L: Layout) -> float:
    """A unit's forward FLOPs per token on a rank (what stages are balanced by)."""
    return u.at(L.tp, L.ep).flops + 1e-9


def _count_split_ratio(model_units: list[Unit], best: Estimate, cluster: Cluster, work: Workload) -> float:
    """The slowest stage's FLOPs when the repeated layers are split into stages of equal layer
    counts (Megatron's cut; the embedding joins the first stage, the final norm and head the last),
    over the chosen cut's."""
    L = best.layout
    k = L.pp * L.virtual
    if k == 1:
        return 1.0
    costs = [_unit_cost(u, L) for u in model_units]
    layers = [i for i, u in enumerate(model_units) if re.fullmatch(r".*\.\d+", u.name)]
    if len(layers) < k:
        return 1.0
    first, n = layers[0], len(layers)
    even, start = [], first
    for i in range(k):
        size = n // k + (1 if i < n % k else 0)
        even.append((start, start + size))
        start += size
    even[0] = (0, even[0][1])
    even[-1] = (even[-1][0], len(model_units))

    def worst(bounds: list[tuple[int, int]]) -> float:
        return max(sum(costs[a:z]) for a, z in bounds)

    chosen, start = [], 0
    for stage in best.stages:
        chosen.append((start, start + len(stage)))
        start += len(stage)
    return worst(even) / worst(chosen)


def _no_layout(cluster: Cluster, work: Workload, fixed: dict[str, Any], n_units: int) -> str:
    deg = {k: v for k, v in fixed.items() if k in ("tp", "cp", "pp", "dp", "ep")}
    product = 1
    for k in ("tp", "cp", "pp", "dp"):
        product *= deg.get(k, 1)
    if deg and cluster.devices % product:
        return f"the fixed degrees {deg} multiply to {product}, which does not divide {cluster.devices} devices"
    if "tp" in deg and deg["tp"] > cluster.per_node:
        return f"tp={deg['tp']} spans more than a node's {cluster.per_node} devices"
    if "pp" in deg and deg["pp"] > n_units:
        return f"pp={deg['pp']} exceeds the model's {n_units} layers"
    return (f"no layout of {cluster.devices} devices divides the global batch of {work.global_batch} sequences "
            f"under {deg or 'no fixed degrees'}")
