"""The planner (`archc plan`): per-rank parameter counts against Megatron's closed forms, memory
and time against the formulas docs/distributed.md states, stage balancing, constraints and
refusals, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import archc
from archc.ir.cost import CostCtx
from archc.parallel import Layout, PlanError, Workload, cluster_for, estimate, parse_plan, plan
from archc.parallel.estimate import balance
from archc.parallel.profile import units

ROOT = Path(__file__).resolve().parents[2]
LLAMA7 = str(ROOT / "specs/llama2-7b.arch")


def _units(spec: str, seq: int = 4096):
    return units(archc.load(spec).graph, CostCtx(seq=seq))


def test_tensor_parallel_parameters_per_rank_are_megatrons():
    """Llama-2-7B at tp = 8: each rank holds 1/8 of the vocabulary-parallel embedding and LM head,
    1/8 of every attention and MLP matrix, and whole norms (h each) — Megatron's split."""
    h, f, v, n = 4096, 11008, 32000, 32
    layer = (4 * h * h + 3 * h * f) // 8 + 2 * h
    want = 2 * v * h // 8 + n * layer + h
    got = sum(u.at(8, 1).params for u in _units(LLAMA7))
    assert got == want
    assert sum(u.at(1, 1).params for u in _units(LLAMA7)) == 6_738_415_616


def test_memory_is_the_stated_bytes_per_parameter():
    """DDP: 2 + 4 + 12 bytes a parameter; ZeRO-1: 12 of them sharded; FSDP: 16 sharded (plus two
    layers gathered in bf16)."""
    u, work = _units(LLAMA7), Workload(seq=4096, global_batch=8)
    c = cluster_for(8, "h100")
    p = 6_738_415_616
    ddp = estimate(u, Layout(dp=8, zero="ddp"), c, work).memory
    assert (ddp["weights"], ddp["gradients"], ddp["optimizer"]) == (2 * p, 4 * p, 12 * p)
    zero1 = estimate(u, Layout(dp=8, zero="zero1"), c, work).memory
    assert zero1["optimizer"] == pytest.approx(12 * p / 8)
    fsdp = estimate(u, Layout(dp=8, zero="fsdp"), c, work).memory
    largest = max(x.at(1, 1).params for x in u)
    assert fsdp["weights"] == pytest.approx(4 * p / 8 + 4 * largest)
    assert fsdp["gradients"] + fsdp["optimizer"] == pytest.approx(12 * p / 8)


def test_compute_bound_step_is_three_forward_passes_at_the_efficiency():
    """Without communication (one device), the step is 3·F·tokens / (peak · efficiency), 4·F with
    activation checkpointing; F is the cost model's forward FLOPs per token."""
    g = archc.load(LLAMA7).graph
    u = units(g, CostCtx(seq=2048))
    c = cluster_for(1, "h100")
    work = Workload(seq=2048, global_batch=4)
    from archc.passes.estimate_cost import estimate_cost

    f = estimate_cost(g, CostCtx(seq=2048)).total.flops
    e = estimate(u, Layout(), c, work)
    assert e.step == pytest.approx(3 * f * 4 * 2048 / (c.device.peak * c.efficiency))
    e = estimate(u, Layout(checkpoint=True), c, work)
    assert e.step == pytest.approx(4 * f * 4 * 2048 / (c.device.peak * c.efficiency))


def test_pipeline_bubble_and_in_flight_activations():
    """1F1B: (pp − 1) idle slots of one microbatch, stage 0 holds pp microbatches' activations;
    interleaved with v chunks: the bubble shrinks v-fold and stage 0 holds ×(1 + (pp−1)/(pp·v))."""
    u, c = _units(LLAMA7), cluster_for(8, "h100")
    work = Workload(seq=4096, global_batch=32)
    one = estimate(u, Layout(pp=4, dp=2, schedule="1f1b"), c, work)
    m = one.microbatches
    busy = one.time["total"] - one.time["pipeline bubble"] - one.time["data-parallel (exposed)"]
    assert one.time["pipeline bubble"] == pytest.approx(busy / m * 3)
    inter = estimate(u, Layout(pp=4, dp=2, virtual=2, schedule="interleaved"), c, work)
    busy_i = inter.time["total"] - inter.time["pipeline bubble"] - inter.time["data-parallel (exposed)"]
    assert inter.time["pipeline bubble"] == pytest.approx(busy_i / m * 3 / 2)
    # the fullest rank's activations (the estimate reports that rank): stage r holds min(m, pp − r)
    # microbatches under 1F1B; rank r of the interleaved schedule runs virtual stages r and r + pp
    act = {x.name: x.at(1, 1).act * 4096 for x in u}  # one sequence's activations per unit (mbs 1)
    ranks = [sum(act[n] for n in one.stages[r]) * min(m, 4 - r) for r in range(4)]
    assert any(one.memory["activations"] == pytest.approx(a, rel=1e-12) for a in ranks), (one.memory, ranks)
    ranks = [sum(act[n] for n in inter.stages[r] + inter.stages[r + 4]) * min(m, 4) * (1 + 3 / 8) for r in range(4)]
    assert any(inter.memory["activations"] == pytest.approx(a, rel=1e-12) for a in ranks), (inter.memory, ranks)


def test_stages_are_balanced_by_cost_for_a_hybrid():
    """jamba-tiny's layers cost differently (attention + MoE vs Mamba + MLP): the cut by FLOPs is
    never worse than Megatron's cut by layer count, and balance() minimizes the largest run."""
    assert balance([1, 1, 1, 1, 4], 2) == [4, 1]
    costs = [5, 1, 1, 1, 1, 1]
    runs = balance(costs, 3)
    assert len(runs) == 3 and sum(runs) == 6 and runs[0] == 1  # the 5 stands alone: the optimum is 5
    p = plan(archc.load(str(ROOT / "specs/jamba-tiny.arch")).graph, cluster_for(4, "h100"),
             Workload(seq=4096, global_batch=64), parse_plan("pp=4,dp=1"))
    assert p.best.layout.pp == 4 and p.count_split_ratio >= 1.0
    assert sum(len(s) for s in p.best.stages) == len(_units(str(ROOT / "specs/jamba-tiny.arch")))


def test_the_parallel_section_and_plan_strings_constrain_the_search():
    spec = ("model m(tokens) {\n  x = embed(tokens, 256, 64)\n"
            "  x = x + attention(rmsnorm(x), heads=4, causal=true)\n  return lm_head(rmsnorm(x))\n"
            "  parallel {\n    devices = 4\n    tensor = 2\n  }\n}\n")
    g = archc.loads(spec, "m.arch").graph
    p = plan(g, cluster_for(4, "h100"), Workload(seq=512, global_batch=8))
    assert p.best.layout.tp == 2 and all(e.layout.tp == 2 for e, _ in p.runners_up)
    assert parse_plan("tp=2,fsdp=2") == {"tp": 2, "dp": 2, "zero": "fsdp"}
    with pytest.raises(PlanError, match="does not divide"):
        plan(g, cluster_for(4, "h100"), Workload(seq=512, global_batch=8), {"tp": 2, "pp": 3})
    with pytest.raises(PlanError, match="unknown plan key"):
        parse_plan("tensor=2")


def test_a_model_that_fits_nowhere_is_refused_with_the_figure():
    """Mixtral-8x7B's 46.7B parameters need ~747 GB of weights, gradients and AdamW state: eight
    80 GB GPUs cannot hold them however they split."""
    g = archc.load(str(ROOT / "specs/mixtral-8x7b.arch")).graph
    with pytest.raises(PlanError, match=r"no layout fits in 80.0 GB per device: the smallest needs \d+"):
        plan(g, cluster_for(8, "h100"), Workload(seq=4096, global_batch=64))


def test_context_parallelism_is_refused_for_ops_without_a_form():
    g = archc.load(str(ROOT / "specs/bigbird-tiny.arch")).graph
    with pytest.raises(PlanError, match="cannot split this model's sequence"):
        plan(g, cluster_for(2, "h100"), Workload(seq=1024, global_batch=8), {"cp": 2})


def test_moe_expert_parallelism_splits_the_experts():
    u = _units(str(ROOT / "specs/mixtral-tiny.arch"))
    whole = sum(x.at(1, 1).expert_params for x in u)
    assert whole and sum(x.at(1, 2).expert_params for x in u) == pytest.approx(whole / 2)
    assert sum(x.at(1, 2).ep_elems for x in u) > 0


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archc", *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_plan_json_and_refusals():
    r = _cli("plan", "specs/llama2-7b.arch", "--devices", "8", "--seq", "4096", "--global-batch", "64", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["plan"]["memory_bytes"]["total"] <= d["cluster"]["memory_bytes"] and d["runners_up"]
    assert "ARC0502" not in r.stderr
    r = _cli("plan", "specs/llama2-7b.arch", "--plan", "tp=3")
    assert r.returncode == 1 and "ARC1601" in r.stderr
    r = _cli("plan", "specs/llama2-7b.arch", "--inter-bandwidth", "400Gb/s")
    assert r.returncode == 2 and "50GB/s" in r.stderr
    r = _cli("plan", "specs/mixtral-tiny.arch", "--devices", "4", "--seq", "512", "--global-batch", "16")
    assert r.returncode == 0 and "chosen" in r.stdout, r.stderr
