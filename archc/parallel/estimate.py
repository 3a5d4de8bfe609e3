"""The cost of one layout: per-device memory and step time, from the units' shares.

Formulas (docs/distributed.md states them with their sources):

* memory per device, the fullest pipeline rank: weights in bf16 (2 B/param), fp32 gradients
  (4 B) and AdamW's fp32 master weights and two moments (12 B) — `ddp` holds all of them,
  `zero1` (Megatron's distributed optimizer) shards the 12 B over the data-parallel replicas,
  `fsdp` (ZeRO-3, FSDP2) shards 16 B (fp32 parameters, gradients, moments) and gathers two units'
  bf16 weights at a time; activations of the microbatches in flight (1 for no pipeline,
  min(m, pp) for 1F1B, ×(1 + (pp−1)/(pp·v)) interleaved, m for GPipe; Korthikanti et al. 2022),
  with full activation checkpointing each unit keeps its input and one unit recomputes at a time;
* step time: compute is 3× the forward FLOPs (4× with checkpointing) over peak × efficiency;
  tensor-parallel collectives (2(n−1)/n of the bytes per all-reduce, forward and backward) and
  expert all-to-all are on the critical path; ring attention's key/value traffic overlaps the
  attention it feeds; the recurrent state is handed rank to rank (cp − 1 hops, sequential);
  the pipeline adds (pp − 1)/v microbatch slots of bubble; data-parallel gradient reduction
  overlaps the last microbatch's backward, FSDP's gathers each microbatch's compute.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from archc.ir.cost import DTYPE_BYTES
from archc.parallel.cluster import Cluster, Workload
from archc.parallel.profile import Unit

#: Bytes per parameter of each optimizer-state layout: (sharded over data parallelism, not).
BYTES_PER_PARAM = {"ddp": (0, 18), "zero1": (12, 6), "fsdp": (16, 0)}


@dataclass(frozen=True)
class Layout:
    """Degrees of each parallelism and how the step runs. dp·cp·tp·pp = devices; ep divides dp."""

    tp: int = 1
    cp: int = 1
    pp: int = 1
    dp: int = 1
    ep: int = 1
    mbs: int = 1
    virtual: int = 1
    schedule: str = "none"  # none (pp = 1), 1f1b, interleaved, gpipe
    zero: str = "ddp"  # ddp, zero1, fsdp
    checkpoint: bool = False

    @property
    def devices(self) -> int:
        return self.tp * self.cp * self.pp * self.dp

    def text(self) -> str:
        parts = [f"{k}={v}" for k, v in (("tp", self.tp), ("cp", self.cp), ("ep", self.ep), ("pp", self.pp),
                                          ("dp", self.dp)) if v > 1]
        if self.zero == "fsdp":
            parts.append("fsdp")
        return ",".join(parts) or "single device"


@dataclass
class Estimate:
    layout: Layout
    microbatches: int
    #: unit names of each virtual stage, in order (rank r runs stages r, r + pp, …)
    stages: list[list[str]]
    memory: dict[str, float]
    time: dict[str, float]
    model_flops: float  # per step, without recomputation
    hardware_flops: float  # per step, with it
    tokens: int
    capacity: float
    replicated: list[str] = field(default_factory=list)

    @property
    def step(self) -> float:
        return self.time["total"]

    @property
    def fits(self) -> bool:
        return self.memory["total"] <= self.capacity

    def tflops(self, devices: int) -> float:
        """Achieved model TFLOP/s per device (no recomputation counted)."""
        return self.model_flops / self.step / devices / 1e12


def _ring(n: int) -> float:
    """Bytes each rank moves per byte of an all-reduce over n ranks (ring)."""
    return 2 * (n - 1) / n if n > 1 else 0.0


def balance(costs: list[float], parts: int) -> list[int]:
    """Cut `costs` (in order) into `parts` contiguous non-empty runs minimizing the largest sum;
    returns the run lengths. Binary search on the bound with a greedy fill, then exact DP
    refinement is unnecessary for the planner's use (the greedy bound is within one unit)."""
    n = len(costs)
    lo, hi = max(costs), sum(costs)
    for _ in range(40):
        mid = (lo + hi) / 2
        if _fill(costs, mid, parts) is not None:
            hi = mid
        else:
            lo = mid
    runs = _fill(costs, hi, parts)
    assert runs is not None and sum(runs) == n
    return runs


def _fill(costs: list[float], bound: float, parts: int) -> list[int] | None:
    runs: list[int] = []
    i, n = 0, len(costs)
    while i < n:
        left = parts - len(runs)
        if left == 0:
            return None
        # leave at least one unit for each remaining run
        limit = n - (left - 1)
        total, j = 0.0, i
        while j < limit and total + costs[j] <= bound * (1 + 1e-12):
            total += costs[j]
            j += 1
        if j == i:
            return None
        runs.append(j - i)
        i = j
    while len(runs) < parts:  # split the longest run to give every part one unit
        k = max(range(len(runs)), key=lambda r: runs[r])
        if runs[k] < 2:
            return None
        runs[k] -= 1
        runs.insert(k + 1, 1)
    return runs


class Sums:
    """Prefix sums of the units' shares at one (tp, ep): a stage's totals in O(1)."""

    FIELDS = ("flops", "tp_elems", "ep_elems", "ring_elems", "state_elems", "mixes", "params", "expert_params",
              "act", "width")

    def __init__(self, units: list[Unit], tp: int, ep: int) -> None:
        shares = [u.at(tp, ep) for u in units]
        self.prefix: dict[str, list[float]] = {}
        for f in self.FIELDS:
            acc, out = 0.0, [0.0]
            for u, sh in zip(units, shares, strict=True):
                acc += u.width / tp if f == "width" else getattr(sh, f)
                out.append(acc)
            self.prefix[f] = out
        self.max_act = max(sh.act for sh in shares)
        self.max_params = max(sh.params for sh in shares)
        self.replicated = sorted({r for sh in shares for r in sh.replicated})
        #: the whole model's forward FLOPs per token (what MFU counts)
        self.model_flops = sum(n.cost.flops for u in units for n in u.nodes)

    def total(self, field: str, ranges: list[tuple[int, int]]) -> float:
        p = self.prefix[field]
        out = 0.0
        for a, z in ranges:
            out += p[z] - p[a]
        return out


def estimate(units: list[Unit], layout: Layout, cluster: Cluster, work: Workload,
             runs: list[int] | None = None, sums: Sums | None = None) -> Estimate:
    """Memory and step time of `layout` (stage cuts `runs`, default: balanced by FLOPs; `sums`
    the units' prefix sums at the layout's tp and ep, when the caller keeps them)."""
    L = layout
    b = DTYPE_BYTES[work.dtype]
    sums = sums or Sums(units, L.tp, L.ep)
    k = L.pp * L.virtual
    tokens_mb = L.mbs * work.seq / L.cp  # tokens of one microbatch on one rank
    m = work.global_batch // (L.dp * L.mbs)
    peak = cluster.device.peak * cluster.efficiency
    recompute = 1 if L.checkpoint else 0
    bw_tp, bw_cp = cluster.bandwidth(L.tp), cluster.bandwidth(L.tp * L.cp)
    bw_ep, bw_dp = cluster.bandwidth(L.tp * L.cp * L.ep), cluster.bandwidth(L.tp * L.cp * L.dp)
    bw_pp = cluster.bandwidth(L.devices)
    if runs is None:
        step = sums.prefix["flops"]
        runs = balance([step[i + 1] - step[i] + 1e-9 for i in range(len(units))], k) if k > 1 else [len(units)]
    bounds, start = [], 0
    for r in runs:
        bounds.append((start, start + r))
        start += r
    stages = [[u.name for u in units[a:z]] for a, z in bounds]

    width = max(u.width for u in units)
    p2p = 2 * tokens_mb * width * b / bw_pp if L.pp > 1 else 0.0
    dp_group = L.dp * L.cp  # ranks holding the same weights
    rank_parts, rank_time, rank_mem, rank_params = [], [], [], []
    for r in range(L.pp):
        ranges = [bounds[c] for c in range(r, k, L.pp)]
        comp = (3 + recompute) * sums.total("flops", ranges) * tokens_mb / peak
        tp = (2 + recompute) * sums.total("tp_elems", ranges) * tokens_mb * b * _ring(L.tp) / bw_tp
        ep = ((2 + recompute) * sums.total("ep_elems", ranges) * tokens_mb * b * (L.ep - 1) / L.ep / bw_ep
              if L.ep > 1 else 0.0)
        context = 0.0
        if L.cp > 1:  # ring traffic overlaps the compute; the state is handed on hop by hop
            ring = 3 * sums.total("ring_elems", ranges) * b * L.mbs * work.seq * (L.cp - 1) / L.cp / bw_cp
            mixes = sums.total("mixes", ranges)
            state = 2 * (L.cp - 1) * (mixes * cluster.latency + sums.total("state_elems", ranges) * 4 * L.mbs / bw_cp)
            context = max(0.0, ring - comp) + state
        parts = [comp, tp, ep, context]
        rank_parts.append(parts)
        rank_time.append(sum(parts) + p2p * len(ranges))
        params, experts = sums.total("params", ranges), sums.total("expert_params", ranges)
        rank_params.append((params, experts))
        rank_mem.append(_memory(L, sums, ranges, params, experts, dp_group, tokens_mb, b, m, r, width))
    slowest = max(range(L.pp), key=lambda r: rank_time[r])
    t_mb = rank_time[slowest]
    slots = m + (L.pp - 1) / L.virtual if L.pp > 1 else m
    pipeline = slots * t_mb
    # data-parallel gradient reduction (fp32), overlapped with the last microbatch's backward;
    # FSDP's bf16 all-gathers (forward and backward) overlapped with each microbatch's compute
    params, experts = max(rank_params)
    expert_group = max(1, dp_group // L.ep)
    grads = ((params - experts) * 4 * _ring(dp_group) + experts * 4 * _ring(expert_group)) / bw_dp
    compute_mb = rank_parts[slowest][0]
    backward = compute_mb * 2 / (3 + recompute)
    if L.zero == "fsdp":
        gather = 2 * 2 * params * (dp_group - 1) / dp_group / bw_dp
        dp_exposed = m * max(0.0, gather - compute_mb) + max(0.0, grads / 2 - backward)
    else:
        dp_exposed = max(0.0, grads - backward)
    total = pipeline + dp_exposed
    time = {"compute": m * compute_mb,
            "tensor-parallel": m * rank_parts[slowest][1],
            "expert all-to-all": m * rank_parts[slowest][2],
            "context (ring + state)": m * rank_parts[slowest][3],
            "pipeline p2p": m * p2p * len(range(slowest, k, L.pp)),
            "pipeline bubble": pipeline - m * t_mb,
            "data-parallel (exposed)": dp_exposed,
            "total": total}
    worst = max(range(L.pp), key=lambda r: sum(rank_mem[r].values()))
    memory = dict(rank_mem[worst])
    memory["total"] = sum(memory.values())
    tokens = work.global_batch * work.seq
    fwd = sums.model_flops
    return Estimate(L, m, stages, memory, time, 3 * fwd * tokens, (3 + recompute) * fwd * tokens, tokens,
                    cluster.device.memory, sums.replicated)


def _memory(L: Layout, sums: Sums, ranges: list[tuple[int, int]], params: float, experts: float,
            dp_group: int, tokens_mb: float, b: int, m: int, rank: int, width: int) -> dict[str, float]:
    """Bytes one rank of pipeline stage `rank` holds (the units in `ranges`)."""
    dense = params - experts
    n_dense, n_expert = dp_group, max(1, dp_group // L.ep)

    def sharded(per_param: float) -> float:
        return per_param * (dense / n_dense + experts / n_expert)

    if L.zero == "fsdp":
        states = {"weights": sharded(4) + 2 * 2 * sums.max_params, "gradients": sharded(4), "optimizer": sharded(8)}
    else:
        states = {"weights": 2 * params, "gradients": 4 * params,
                  "optimizer": sharded(12) if L.zero == "zero1" else 12 * params}
    full = sums.total("act", ranges) * tokens_mb
    largest = sums.max_act * tokens_mb
    kept = sums.total("width", ranges) * b * tokens_mb if L.checkpoint else full
    if L.pp == 1:
        inflight = 1.0
    elif L.schedule == "gpipe":
        inflight = float(m)
    elif L.virtual > 1:
        inflight = min(m, L.pp) * (1 + (L.pp - 1) / (L.pp * L.virtual))
    else:
        inflight = float(min(m, L.pp - rank))
    acts = kept * inflight + (largest if L.checkpoint else 0.0)
    buffers = 2 * tokens_mb * width * b if L.pp > 1 else 0.0
    return {**states, "activations": acts, "pipeline buffers": buffers}
