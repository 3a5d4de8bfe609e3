"""Issue #24's speed figures on this machine: the training step of llama-tiny at TP = 2 (two CPU
processes, gloo) against the single-process step, with the share of the TP step spent in
collectives; and the step of mamba2-tiny (state passing) and of llama-tiny (ring attention) on
4,096-token sequences at CP = 2 against one process.

The single-process step (on one thread, and on two: the cores the two ranks use) and the TP = 2
step (each rank one thread) are timed over the same steps (batch 8 × 128 tokens, the canonical O0
build, medians of 10 steps after 3 warm-up steps). The communication share is from torch.profiler on rank 0: the CPU time of the collective
ops (gloo all-reduce / all-gather under DTensor) over the profiled steps' wall time.

    .venv/bin/python tools/bench_distributed.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SPEC = ROOT / "specs/llama-tiny.arch"
BATCH, SEQ, WARM, STEPS = 8, 128, 3, 10
CP_SEQ = 4096


def _steps(model, step_fn) -> list[float]:
    import torch

    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(WARM + STEPS):
        ids = torch.randint(0, 4096, (BATCH, SEQ), generator=gen)
        t = time.perf_counter()
        step_fn(ids)
        if i >= WARM:
            times.append(time.perf_counter() - t)
    return times


def single(threads: int) -> float:
    import torch

    from archc.backends.torch import build

    torch.set_num_threads(threads)
    model = build(str(SPEC), pipeline="O0")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(ids):
        opt.zero_grad()
        model(ids, labels=ids).loss.backward()
        opt.step()

    return statistics.median(_steps(model, step))


def rank(out: str) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from archc.backends.torch import build
    from archc.backends.torch import distributed as D

    torch.set_num_threads(1)
    rt = D.start(D.Degrees(tp=2))
    model = build(str(SPEC), pipeline="O0")
    D.tensor_parallel(model, rt.mesh["tp"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scored = torch.tensor(BATCH * (SEQ - 1))

    def step(ids):
        opt.zero_grad()
        with D.loss_context(model):
            loss, _, _ = D.rank_loss(model, ids, ids, scored)
            loss.backward()
        opt.step()

    times = _steps(model, step)
    gen = torch.Generator().manual_seed(1)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        for _ in range(3):
            step(torch.randint(0, 4096, (BATCH, SEQ), generator=gen))
        wall = time.perf_counter() - t
    comm = sum(e.self_cpu_time_total for e in prof.key_averages()
               if any(k in e.key.lower() for k in ("all_reduce", "allreduce", "all_gather", "allgather",
                                                    "reduce_scatter", "wait_tensor", "gloo")))
    if rt.rank == 0:
        Path(out).write_text(json.dumps({"step": statistics.median(times), "comm_share": comm / 1e6 / wall}))
    rt.close()


def cp_single(seq: int, spec: str) -> float:
    import torch

    from archc.backends.torch import build

    torch.set_num_threads(1)
    model = build(str(ROOT / spec), pipeline="O0")
    ids = torch.randint(0, 4096, (1, seq), generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(4):
        t = time.perf_counter()
        model(ids, labels=ids).loss.backward()
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def cp_rank(out: str, seq: int, spec: str) -> None:
    import torch

    from archc.backends.torch import build
    from archc.backends.torch import distributed as D
    from archc.backends.torch.context_parallel import context_parallel

    torch.set_num_threads(1)
    rt = D.start(D.Degrees(cp=2))
    model = build(str(ROOT / spec), pipeline="O0")
    context_parallel(model, rt.mesh["cp"])
    ids = torch.randint(0, 4096, (1, seq), generator=torch.Generator().manual_seed(0))
    scored = torch.tensor(seq - 1)
    times = []
    for _ in range(4):
        t = time.perf_counter()
        loss, _, _ = D.context_loss(rt, model, ids, ids, scored)
        loss.backward()
        D.sum_grads(model, rt.mesh["cp"].get_group())
        times.append(time.perf_counter() - t)
    if rt.rank == 0:
        Path(out).write_text(json.dumps({"step": statistics.median(times[1:])}))
    rt.close()


def _launch(*args: str) -> dict:
    import tempfile
    import uuid

    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=2, run_id=f"bench-{uuid.uuid4().hex[:8]}",
                              rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1)
        os.environ["OMP_NUM_THREADS"] = "1"
        elastic_launch(config, sys.executable)(__file__, *args, out)
        return json.loads(Path(out).read_text())


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--rank":
        rank(sys.argv[2])
        return
    if len(sys.argv) > 3 and sys.argv[1] == "--cp-rank":
        cp_rank(sys.argv[3], CP_SEQ, sys.argv[2])
        return
    one, two = single(1), single(2)
    tp = _launch("--rank")
    print(f"llama-tiny, batch {BATCH} × {SEQ} tokens, O0, one thread a process (this machine: {os.cpu_count()} cores)")
    print(f"single process: {one * 1e3:.1f} ms/step on 1 thread, {two * 1e3:.1f} ms/step on 2; TP=2 (gloo): "
          f"{tp['step'] * 1e3:.1f} ms/step = {tp['step'] / one:.2f}× the 1-thread step, {tp['step'] / two:.2f}× the "
          f"2-thread one; collectives {tp['comm_share']:.0%} of the TP step")


    for spec, how in (("specs/mamba2-tiny.arch", "state passing"), ("specs/llama-tiny.arch", "ring attention")):
        cp1 = cp_single(CP_SEQ, spec)
        cp2 = _launch("--cp-rank", spec)
        print(f"{Path(spec).stem}, one {CP_SEQ}-token sequence, forward + backward: one process {cp1:.2f} s; CP=2 "
              f"({how}, gloo) {cp2['step']:.2f} s = {cp2['step'] / cp1:.2f}×")


if __name__ == "__main__":
    main()
