"""Issue #24's activation check: the bytes archc's eager PyTorch modules keep for the backward pass
against the planner's figure (the cost model's `act_bytes`: what fused kernels keep, at the
costed dtype), per spec and per op.

Measured with `torch.autograd.graph.saved_tensors_hooks` over one training forward (fp32, batch
2 × 64 tokens, the canonical O0 build): every tensor autograd saves, counted once per storage and
charged to the op module whose forward was running (the interpreter's inline ops and the loss to
"(between ops)"). Predicted: each node's `act_bytes` per token at fp32 × the tokens — what
`archc plan` sums into a rank's activations.

    .venv/bin/python tools/activation_memory.py [specs/llama-tiny.arch ...]
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SPECS = ("specs/llama-tiny.arch", "specs/mamba2-tiny.arch", "specs/jamba-tiny.arch", "specs/rwkv6-tiny.arch")
BATCH, SEQ = 2, 64


def measure(spec: str) -> tuple[float, float, dict[str, tuple[float, float]]]:
    """(measured bytes, predicted bytes, op -> (measured, predicted))."""
    import torch

    import archc
    from archc.backends.torch import build
    from archc.ir.cost import CostCtx
    from archc.parallel.profile import units

    graph = archc.load(str(ROOT / spec)).graph
    model = build(graph, seed=0, pipeline="O0").train()
    running: list[str] = []
    seen: dict[int, tuple[int, str]] = {}
    ops = {nid: graph.nodes[nid].op for nid, _ in model.op_modules()}

    def enter(nid: str) -> None:
        running.append(nid)

    def leave() -> None:
        running.pop()

    for nid, mod in model.op_modules():
        mod.register_forward_pre_hook(lambda m, a, nid=nid: enter(nid))
        mod.register_forward_hook(lambda m, a, o: leave())

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        seen.setdefault(st.data_ptr(), (st.nbytes(), ops[running[-1]] if running else "(between ops)"))
        return t

    ids = torch.randint(0, 100, (BATCH, SEQ), generator=torch.Generator().manual_seed(0))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(ids, labels=ids)
    per_op: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for nbytes, op in seen.values():
        per_op[op][0] += nbytes
    tokens = BATCH * SEQ
    for u in units(graph, CostCtx(seq=SEQ, batch=1, dtype="fp32")):
        for n in u.nodes:
            per_op[n.op][1] += n.cost.act_bytes * tokens
    measured = sum(m for m, _ in per_op.values())
    predicted = sum(p for _, p in per_op.values())
    return measured, predicted, {k: (v[0], v[1]) for k, v in per_op.items()}


def main() -> None:
    specs = sys.argv[1:] or SPECS
    print(f"fp32, batch {BATCH} × {SEQ} tokens, O0; MB kept for backward: measured / the planner's (ratio)")
    for spec in specs:
        measured, predicted, per_op = measure(spec)
        print(f"\n{Path(spec).stem}: {measured / 1e6:.2f} / {predicted / 1e6:.2f} MB ({measured / predicted:.2f}×)")
        for op, (m, p) in sorted(per_op.items(), key=lambda kv: -kv[1][0]):
            ratio = f"{m / p:.2f}×" if p else "not modelled"
            print(f"  {op:<22} {m / 1e6:8.2f} / {p / 1e6:6.2f}  {ratio}")


if __name__ == "__main__":
    main()
