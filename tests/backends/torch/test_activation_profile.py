"""The eager activation profile (archc/backends/torch/activation_profile.py) against what autograd
really saves: one training forward of the real modules (random weights, real routing) keeps what
the fake-tensor profile predicts, within 10%; the long-sequence fit reproduces a direct
measurement; the planner and `archc plan --activations eager` use it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import archc  # noqa: E402
from archc.backends.torch import activation_profile as AP  # noqa: E402
from archc.backends.torch import build  # noqa: E402
from archc.ir.cost import CostCtx  # noqa: E402
from archc.parallel import Workload, cluster_for, plan  # noqa: E402
from archc.parallel.profile import units  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]


def _real(graph, batch: int, seq: int) -> dict[str, int]:
    model = build(graph, seed=0, pipeline="O0").train()
    counter = AP.SavedBytes([*model.parameters(), *model.buffers()])
    AP.charge_to_ops(model, counter)
    torch.manual_seed(0)
    with counter.counting():
        AP.training_forward(model, batch, seq)
    return counter.by_key()


@pytest.mark.parametrize("spec", ["llama-tiny", "mamba2-tiny", "jamba-tiny", "rwkv6-tiny", "xlstm-tiny",
                                  "gated-deltanet-tiny", "retnet-tiny", "bigbird-tiny", "longformer-tiny",
                                  "linformer-tiny"])
def test_the_profile_predicts_what_a_real_forward_keeps(spec):
    graph = archc.load(str(ROOT / "specs" / f"{spec}.arch")).graph
    real = _real(graph, 2, 32)
    profile = AP.activation_profile(graph, 32, "fp32", batch=2)
    assert set(profile) <= set(graph.nodes)
    predicted = sum(profile.values()) * 2 * 32
    assert sum(real.values()) == pytest.approx(predicted, rel=0.10)
    # and far from the fused cost model's figure for the scans: the profile is not that figure renamed
    fused = sum(n.cost.act_bytes for u in units(graph, CostCtx(seq=32, dtype="fp32")) for n in u.nodes) * 64
    if spec in ("mamba2-tiny", "jamba-tiny", "rwkv6-tiny", "xlstm-tiny", "gated-deltanet-tiny", "retnet-tiny"):
        assert predicted > 1.5 * fused


def test_a_long_sequence_is_fitted_from_probes(monkeypatch):
    """c + αT + βT² from three probe lengths equals a direct measurement at another length, for
    a model whose attention writes out its T × T scores (a soft-capped attention)."""
    graph = archc.loads("""model capped(tokens) {
  block decoder(x) {
    x = x + attention(rmsnorm(x), heads=2, causal=true, softcap=30.0)
    return x + swiglu(rmsnorm(x), hidden=64)
  }
  x = embed(tokens, 64, 32)
  x = repeat(2, decoder)(x)
  return lm_head(rmsnorm(x), tied=true)
}
""", "capped.arch").graph
    direct = AP.activation_profile(graph, 96, "fp32")
    monkeypatch.setattr(AP, "EXACT", 16)
    monkeypatch.setattr(AP, "PROBES", (16, 32, 64))
    fitted = AP.activation_profile(graph, 96, "fp32")
    assert sum(fitted.values()) == pytest.approx(sum(direct.values()), rel=1e-6)
    per_token = [sum(AP.activation_profile(graph, t, "fp32").values()) for t in (16, 64)]
    assert per_token[1] > per_token[0]  # the scores: bytes per token grow with the length


def test_the_planner_plans_with_the_eager_profile():
    graph = archc.load(str(ROOT / "specs" / "mamba2-tiny.arch")).graph
    cluster, work = cluster_for(8, "h100"), Workload(seq=256, global_batch=8, dtype="bf16")
    fused = plan(graph, cluster, work, {"tp": 1, "pp": 1, "cp": 1, "mbs": 1, "dp": 8})
    profiles = AP.activation_profiles(graph, 256, "bf16", degrees=(1,))
    eager = plan(graph, cluster, work, {"tp": 1, "pp": 1, "cp": 1, "mbs": 1, "dp": 8}, activations=profiles)
    assert (fused.activations, eager.activations) == ("fused", "eager")
    assert eager.best.memory["activations"] == pytest.approx(sum(profiles[1].values()) * 256, rel=1e-9)
    assert eager.best.memory["activations"] > 2 * fused.best.memory["activations"]


def test_archc_plan_measures_eager_activations():
    r = subprocess.run([sys.executable, "-m", "archc", "plan", "specs/llama-tiny.arch", "--devices", "2",
                        "--seq", "64", "--global-batch", "4", "--activations", "eager", "--json"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["activations"] == "eager" and out["plan"]["memory_bytes"]["activations"] > 0
