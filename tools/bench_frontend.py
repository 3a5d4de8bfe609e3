"""Front-end speed, side by side with `python -c "import torch"` on the same machine.

    .venv/bin/python tools/bench_frontend.py [--runs 7]

Reports medians of wall time for whole processes (what a user waits for): `archc --help`,
`archc check` and `archc summary` on llama2-7b and mixtral-8x7b, against `import torch`; and the
in-process time to parse and lower a generated 1,000-layer spec written out layer by layer (no
`repeat`), to show no stage is quadratic in depth. Targets: check and summary ≤ 0.15× the torch
import (issue 12; 1/4 in issue 2), --help below that, 1,000 layers < 2 s.

archc's modules are byte-compiled first, as `pip install` does for torch's: this environment sets
PYTHONDONTWRITEBYTECODE, so an editable checkout would otherwise recompile every archc module in
every process (~50 ms) while torch loads its installed bytecode — not the comparison a user sees.
"""

from __future__ import annotations

import argparse
import compileall
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def wall(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def deep_spec(layers: int) -> str:
    lines = ["model deep(tokens) {", "  x = embed(tokens, 32000, 512)"]
    for i in range(layers):
        lines.append(f"  x = x + attention(rmsnorm(x), heads=8, kv_heads=2, causal=true, name=\"attn{i}\")")
        lines.append("  x = x + swiglu(rmsnorm(x), hidden=1376)")
    lines += ["  return lm_head(rmsnorm(x))", "}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    py = sys.executable
    compileall.compile_dir(ROOT / "archc", quiet=1)
    torch_t = wall([py, "-c", "import torch"], args.runs)
    rows = [("python -c 'import torch'", torch_t)]
    rows.append(("archc --help", wall([py, "-m", "archc", "--help"], args.runs)))
    for spec in ("llama2-7b", "mixtral-8x7b"):
        rows.append((f"archc check {spec}", wall([py, "-m", "archc", "check", f"specs/{spec}.arch"], args.runs)))
        rows.append((f"archc summary {spec}",
                     wall([py, "-m", "archc", "summary", f"specs/{spec}.arch", "--seq", "4096"], args.runs)))
    # The floor under any front end built on the libraries DESIGN.md names: the interpreter, pydantic
    # with one model defined (its lazy imports run then), lark with a parser loaded from its cache.
    floor = [("floor: python -c pass", [py, "-c", "pass"]),
             ("floor: pydantic + one model", [py, "-c", "import pydantic\nclass A(pydantic.BaseModel):\n    x: int"]),
             ("floor: import lark", [py, "-c", "import lark"])]
    rows += [(name, wall(cmd, args.runs)) for name, cmd in floor]
    print(f"{'command':<34} {'median s':>9} {'÷ torch':>8}")
    for name, t in rows:
        print(f"{name:<34} {t:>9.3f} {t / torch_t:>8.2f}")

    import archc

    for layers in (250, 1000):
        text = deep_spec(layers)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            g = archc.loads(text, "deep.arch").graph
            times.append(time.perf_counter() - t0)
        print(f"parse + lower {layers:>5} layers written out ({len(g.nodes):,} nodes): "
              f"{statistics.median(times):.3f} s")


if __name__ == "__main__":
    main()
