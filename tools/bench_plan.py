"""Issue #24's speed target: `archc plan` for a 70B spec over 1,024 devices in under a second.

Times the planner in-process (`archc.parallel.plan`: profiling the spec's layers and the search,
median of 5 after one warm-up) and the whole command as a user runs it (`archc plan
specs/llama2-70b.arch --devices 1024 --nodes 128 --global-batch 1024`, median of 3 processes,
parse and lower included).

    .venv/bin/python tools/bench_plan.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    import archc
    from archc.parallel import Workload, cluster_for, plan

    graph = archc.load(str(ROOT / "specs/llama2-70b.arch")).graph
    cluster, work = cluster_for(1024, "h100", nodes=128), Workload(seq=4096, global_batch=1024)
    plan(graph, cluster, work)
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        p = plan(graph, cluster, work)
        runs.append(time.perf_counter() - t)
    print(f"plan(): median {statistics.median(runs):.3f} s of {[round(r, 3) for r in runs]}; "
          f"{p.considered} layouts costed, {p.fitting} fit; chosen {p.best.layout.text()}")
    cmd = [sys.executable, "-m", "archc", "plan", "specs/llama2-70b.arch", "--devices", "1024", "--nodes", "128",
           "--global-batch", "1024", "--json"]
    procs = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        procs.append(time.perf_counter() - t)
    print(f"archc plan (process): median {statistics.median(procs):.3f} s of {[round(r, 3) for r in procs]}")


if __name__ == "__main__":
    main()
