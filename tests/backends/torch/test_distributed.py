"""A parallel plan run on torch.distributed (gloo, CPU processes) equals the single-process run:
one step's loss and every gradient (fp32, 1e-5) under TP (DTensor styles and local shards of the
recurrent mixers), FSDP, TP × FSDP, EP and CP (the full sequence on one rank, ring attention and
state passing), five AdamW steps' weights through `archc train --nproc` under TP, PP, CP and
ZeRO-1, a run resumed under another plan, and what a tensor-parallel rank holds equals what
`archc plan` predicted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("distributed_step.py")


def _step(tmp_path: Path, nproc: int, *args: str) -> dict:
    out = tmp_path / "result.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           str(WORKER), *args, "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize(("case", "nproc", "args"), [
    ("moe", 2, ("--tp", "2", "--sp")),         # TP=2 + SP: attention by kv groups, experts by hidden units, vocab
    ("hybrid", 2, ("--fsdp",)),                # FSDP=2: Mamba-2, attention and a MoE
    ("dense", 4, ("--tp", "2", "--fsdp", "--sp")),  # TP × FSDP = 2 × 2, sequence-parallel
    ("experts", 2, ("--ep",)),                 # EP = 2: all-to-all to the experts' ranks and back
    ("mamba2", 2, ("--cp",)),                  # CP = 2: each rank scans its chunk from the state handed on
    ("gdn", 2, ("--cp",)),
    ("hybrid", 2, ("--cp",)),                  # CP = 2 of a hybrid: ring attention, Mamba-2 passes state
    ("ring", 4, ("--cp",)),                    # CP = 4 ring: learned bias, ALiBi, window, GQA, softcap
    ("mamba2", 2, ("--tp", "2", "--sp")),      # local shards: packed in_proj, B/C replicated, norm reduced
    ("mamba", 2, ("--tp", "2")),               # Mamba-1 by inner channels: x_proj all-reduced inside
    ("recurrent", 2, ("--tp", "2")),           # retention and RWKV-6 by heads
    ("hybrid", 4, ("--tp", "2", "--fsdp", "--sp")),  # TP × FSDP × SP: Mamba-2 local shards, attention, MoE
    ("sparse_moe", 2, ("--fsdp",)),            # experts no token of a rank reaches: every rank runs every expert
    ("gdn", 2, ("--tp", "2", "--sp")),         # Gated DeltaNet by key heads, each with its value heads
    ("xlstm", 2, ("--tp", "2", "--sp")),       # mLSTM: the gates' pre-activations summed inside the op
    ("heads", 2, ("--tp", "2", "--sp")),       # linear, Performer, Longformer, BigBird, Linformer by heads
], ids=["tp2-moe", "fsdp2-hybrid", "tp2xfsdp2-dense", "ep2-moe", "cp2-mamba2", "cp2-gated-deltanet", "cp2-hybrid",
        "cp4-ring-attention", "tp2-mamba2", "tp2-mamba-hybrid", "tp2-retention-rwkv6", "tp2xfsdp2-hybrid",
        "fsdp2-unused-experts", "tp2-gated-deltanet", "tp2-mlstm", "tp2-sparse-linear-attention"])
def test_a_step_equals_the_single_process_step(tmp_path, case, nproc, args):
    r = _step(tmp_path, nproc, "--case", case, *args)
    assert abs(r["loss"] - r["reference_loss"]) < 1e-5, r
    assert r["grad_error"] < 1e-5 and r["grad_names"], r
    if case == "sparse_moe":  # the case keeps its point: experts the batch leaves unused
        assert r["unused_in_reference"] > 0, r
    if "--tp" in args:  # per-rank parameters: the rules' local shapes, as the planner counted them
        assert r["held"] == r["predicted"] and not r["whole"], r
        # sequence parallelism: a norm runs on the rank's chunk of the 12 tokens, else on all of them
        assert r["norm_tokens"] == (6 if "--sp" in args else 12), r
    if "--tp" not in args or "--sp" in args:  # activations kept for backward: the planner's eager profile, ±10%
        assert r["act_measured"] == pytest.approx(r["act_predicted"], rel=0.10), r
    if r["memory"]:  # FSDP: fp32 shards of weights, gradients and AdamW's two moments, byte for byte
        m = r["memory"]
        for part in ("weights", "gradients", "optimizer"):
            assert m[part] == pytest.approx(m[f"{part}_predicted"], rel=1e-12), (part, m)


def _archc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archc", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


COMMON = ("--task", "chars", "--steps", "5", "--batch", "4", "--seq", "32", "-q")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """Five single-process steps of a spec (canonical build), once per spec."""
    runs: dict[str, Path] = {}

    def run(spec: str) -> Path:
        if spec not in runs:
            out = tmp_path_factory.mktemp("one")
            r = _archc("train", spec, *COMMON, "--pipeline", "O0", "--out", str(out))
            assert r.returncode == 0, r.stderr
            runs[spec] = out / "last.safetensors"
        return runs[spec]

    return run


@pytest.mark.parametrize(("spec", "plan"), [
    ("specs/llama-tiny.arch", "tp=2"),                     # tied head, GQA
    ("specs/llama-tiny.arch", "pp=2,v=2"),                 # interleaved 1F1B; the tied table on both ends
    ("specs/mamba2-tiny.arch", "pp=2,schedule=gpipe"),     # a recurrent mixer's stages
    ("specs/llama-tiny.arch", "cp=2"),                     # attention over gathered K/V, rope at absolute positions
    ("specs/llama-tiny.arch", "dp=2,zero=zero1"),          # DDP with the optimizer's state sharded (ZeRO-1)
    ("specs/mamba2-tiny.arch", "tp=2"),                    # local shards gathered into the consolidated file
    ("specs/llama-tiny.arch", "pp=2,fsdp=2"),              # two pipelines, each stage FSDP over its replicas
    ("specs/llama-tiny.arch", "cp=2,fsdp=2"),              # two rings, FSDP over the replicas
    ("specs/mamba2-tiny.arch", "pp=2,tp=2"),               # 3-D: each stage's local shards over two ranks, SP between
], ids=["tp2-llama", "pp2-interleaved-llama", "pp2-gpipe-mamba2", "cp2-llama", "zero1-llama", "tp2-mamba2",
        "pp2xfsdp2-llama", "cp2xfsdp2-llama", "pp2xtp2-mamba2"])
def test_archc_train_nproc_trains_as_one_process_does(tmp_path, one_process, spec, plan):
    """Five AdamW steps under the plan give the single-process weights (canonical build), written
    as one consolidated safetensors file under the single-process names."""
    from safetensors.torch import load_file

    nproc = 4 if "fsdp=2" in plan or ("tp=2" in plan and "pp=2" in plan) else 2
    two = _archc("train", spec, *COMMON, "--nproc", str(nproc), "--plan", plan, "--out", str(tmp_path / "run"))
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = load_file(one_process(spec)), load_file(tmp_path / "run/last.safetensors")
    assert a.keys() == b.keys()
    _same_training(a, b, tmp_path / "run/train_config.json")


def _same_training(a: dict, b: dict, config: Path) -> None:
    """Two fp32 runs of the same steps whose sums are ordered differently. Where AdamW's second
    moment is still tiny its update is about lr·sign(g), so an element whose gradient is ~0 can
    move by up to a step's learning rate either way on another CPU; every other element agrees to
    fp32 rounding (1.2e-7 measured here). So: every element within the learning rates' sum — a
    wrong split moves whole updates and fails it — and all but 1e-4 of them within 1e-5."""
    from archc.backends.torch.train import TrainConfig, lr_at

    d = json.loads(config.read_text())
    cfg = TrainConfig(**{**d, "betas": tuple(d["betas"])})
    budget = cfg.lr * sum(lr_at(s, cfg) for s in range(cfg.steps))
    diffs = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    assert float(diffs.max()) <= budget, (float(diffs.max()), budget)
    assert float((diffs > 1e-5).float().mean()) <= 1e-4, float(diffs.max())


def test_plans_that_do_not_run_are_refused(tmp_path):
    r = _archc("train", "specs/llama-tiny.arch", "--nproc", "4", "--plan", "pp=2,cp=2", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "ARC1602" in r.stderr and "with data parallelism only" in r.stderr
    r = _archc("train", "specs/bigbird-tiny.arch", "--nproc", "2", "--plan", "cp=2", "--out", str(tmp_path / "x"))
    assert r.returncode == 1 and "global and random blocks reach across the sequence" in r.stderr, r.stderr
    r = _archc("train", "specs/llama-tiny.arch", "--nproc", "2", "--plan", "tp=3", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "ARC1602" in r.stderr
    r = _archc("train", "specs/llama-tiny.arch", "--nproc", "4", "--plan", "tp=2,zero=ddp", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "fsdp=2" in r.stderr, r.stderr
    r = _archc("train", "specs/jamba-tiny.arch", "--nproc", "2", "--plan", "pp=2", "--steps", "1", "--batch", "2",
               "--seq", "16", "--out", str(tmp_path / "j"))
    assert r.returncode == 1 and "auxiliary loss" in r.stderr, r.stderr[-2000:]


def test_resume_under_another_plan_continues_as_one_process_does(tmp_path):
    """Three steps of Mamba-2 under TP = 2 (local shards: their pieces gathered whole into the
    train state), resumed to five as a pipeline (DCP reads each stage's tensors) equal three
    single-process steps resumed to five; a train state of another spec is refused before any step."""
    from safetensors.torch import load_file

    from archc.backends.torch.distributed_checkpoint import STATE_DIR

    run, one = tmp_path / "run", tmp_path / "one"
    base = ("train", "specs/mamba2-tiny.arch", "--task", "chars", "--batch", "4", "--seq", "32", "-q")
    for extra in (("--steps", "3"), ("--steps", "5", "--resume")):
        r = _archc(*base, *extra, "--pipeline", "O0", "--out", str(one))
        assert r.returncode == 0, r.stderr[-2000:]
    r = _archc(*base, "--steps", "3", "--nproc", "2", "--plan", "tp=2", "--out", str(run))
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in (run / STATE_DIR).iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    r = _archc(*base, "--steps", "5", "--nproc", "2", "--plan", "pp=2", "--resume", "--out", str(run))
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = load_file(one / "last.safetensors"), load_file(run / "last.safetensors")
    assert a.keys() == b.keys()
    _same_training(a, b, run / "train_config.json")
    # a one-process run's folder does not resume under --nproc, and says how it does
    r = _archc(*base, "--steps", "6", "--nproc", "2", "--plan", "fsdp=2", "--resume", "--out", str(one))
    assert r.returncode == 2 and "ARC0905" in r.stderr and "resumes without --nproc" in r.stderr, r.stderr
    # another spec's train state: refused by name, the run folder untouched
    before = (run / "last.safetensors").read_bytes()
    r = _archc("train", "specs/llama-tiny.arch", *base[2:], "--steps", "6", "--nproc", "2", "--plan", "fsdp=2",
               "--resume", "--out", str(run))
    assert r.returncode == 1 and "ARC1308" in r.stderr and "another spec" in r.stderr, r.stderr[-2000:]
    assert (run / "last.safetensors").read_bytes() == before
