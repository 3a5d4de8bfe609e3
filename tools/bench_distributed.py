"""Issue #24's speed figures for tensor parallelism on this machine: the training step of
llama-tiny at TP = 2 (two CPU processes, gloo) against the single-process step, and the share of
the TP step spent in collectives.

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


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--rank":
        rank(sys.argv[2])
        return
    import tempfile

    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    one, two = single(1), single(2)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "tp2.json")
        config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=2, run_id="bench-tp2", rdzv_backend="c10d",
                              rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1)
        os.environ["OMP_NUM_THREADS"] = "1"
        elastic_launch(config, sys.executable)(__file__, "--rank", out)
        tp = json.loads(Path(out).read_text())
    print(f"llama-tiny, batch {BATCH} × {SEQ} tokens, O0, one thread a process (this machine: {os.cpu_count()} cores)")
    print(f"single process: {one * 1e3:.1f} ms/step on 1 thread, {two * 1e3:.1f} ms/step on 2; TP=2 (gloo): "
          f"{tp['step'] * 1e3:.1f} ms/step = {tp['step'] / one:.2f}× the 1-thread step, {tp['step'] / two:.2f}× the "
          f"2-thread one; collectives {tp['comm_share']:.0%} of the TP step")


if __name__ == "__main__":
    main()
