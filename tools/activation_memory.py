"""Issue #24's activation check: the bytes archc's eager PyTorch modules keep for the backward pass,
measured on a real training forward, against the planner's two figures — the eager profile
(`archc plan --activations eager`: the same modules on fake tensors, a balanced MoE dispatch)
and the cost model's `act_bytes` (what fused kernels keep) — per spec and per op.

Measured with `torch.autograd.graph.saved_tensors_hooks` over one training forward and loss (fp32,
batch 2 × 64 tokens, O0, random weights): every tensor autograd saves, once per storage,
parameters excluded, charged to the op whose forward was running (between ops: the op that ran
last). Every spec under 60M parameters by default.

    .venv/bin/python tools/activation_memory.py [specs/llama-tiny.arch ...]
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BATCH, SEQ = 2, 64
LARGEST = 60e6


def measure(spec: str) -> dict[str, tuple[float, float, float]] | None:
    """op -> (measured, eager profile, fused cost model) bytes, or None for a large spec."""
    import torch

    import archc
    from archc.backends.torch import build
    from archc.backends.torch.activation_profile import (
        SavedBytes,
        activation_profile,
        charge_to_ops,
        training_forward,
    )
    from archc.ir.cost import CostCtx
    from archc.parallel.profile import units

    graph = archc.load(str(ROOT / spec)).graph
    if sum(p.numel() for p in build(graph, device="meta").parameters()) > LARGEST:
        return None
    model = build(graph, seed=0, pipeline="O0").train()
    counter = SavedBytes(iter([*model.parameters(), *model.buffers()]))
    charge_to_ops(model, counter)
    torch.manual_seed(0)
    with counter.counting():
        training_forward(model, BATCH, SEQ)
    tokens = BATCH * SEQ
    eager = activation_profile(graph, SEQ, "fp32", batch=BATCH)
    per_op: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for nid, nbytes in counter.by_key().items():
        per_op[graph.nodes[nid].op][0] += nbytes
    for u in units(graph, CostCtx(seq=SEQ, batch=1, dtype="fp32")):
        for n in u.nodes:
            per_op[n.op][1] += eager.get(n.id, 0.0) * tokens
            per_op[n.op][2] += n.cost.act_bytes * tokens
    return {op: (m, e, f) for op, (m, e, f) in per_op.items()}


def main() -> None:
    specs = sys.argv[1:] or sorted(str(p.relative_to(ROOT)) for p in (ROOT / "specs").glob("*.arch"))
    print(f"fp32, batch {BATCH} × {SEQ} tokens, O0; MB kept for backward: measured, the eager profile, "
          "the fused cost model (ratios: measured / figure)")
    print("\n| spec | measured MB | eager profile MB | ratio | fused model MB | ratio | largest op gap (fused) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for spec in specs:
        per_op = measure(spec)
        if per_op is None:
            continue
        m, e, f = (sum(v[i] for v in per_op.values()) for i in range(3))
        op, (om, _, of) = max(per_op.items(), key=lambda kv: kv[1][0] - kv[1][2])
        print(f"| {Path(spec).stem} | {m / 1e6:.2f} | {e / 1e6:.2f} | {m / e:.3f} | {f / 1e6:.2f} | {m / f:.2f} | "
              f"{op} {om / of if of else float('inf'):.1f}× |")


if __name__ == "__main__":
    main()
