"""Design evidence for issue #24 (tensor parallelism): is an op's tensor-parallel shard the op
pruned, by its own prune rule, to the rank's units — with the ranks' outputs summed (the
all-reduce after a row-parallel projection) and the output biases counted once?

For each op, a model `embed → op → lm_head` (untied, no bias: linear in the op's output) is
built in fp64 with perturbed weights; for each of `tp` ranks the op keeps a contiguous range of
its units (`sliced_state` + the `prune` pass, as `archc prune` does), rank ≠ 0 zeroes its output
biases, and the ranks' logits are summed. Exact (~1e-17) where the op's output is a sum over its
units; not where something couples the units (a norm over the whole inner width, an x_proj read
by every channel, a router's softmax over every expert). Results are in the #24 notes.

    .venv/bin/python tools/tp_as_prune.py [--tp 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: case → (the op call, the prune unit kind its shards split)
CASES = {
    "attention MHA by heads": ('attention(x, heads=4, causal=true, bias=true, pos=rope())', "heads"),
    "attention GQA by kv groups": ('attention(x, heads=4, kv_heads=2, causal=true, bias=true, pos=rope())',
                                   "kv_heads"),
    "attention GQA by query heads": ('attention(x, heads=4, kv_heads=2, causal=true, bias=true, pos=rope())',
                                     "heads"),
    "swiglu by ffn": ("swiglu(x, hidden=48)", "ffn"),
    "mlp by ffn": ('mlp(x, hidden=48, act="gelu")', "ffn"),
    "retention by heads": ("retention(x, heads=4)", "heads"),
    "mamba2 by heads": ("mamba2(x, d_state=16, head_dim=8, groups=2)", "heads"),
    "mamba by inner channels": ("mamba(x, d_state=8)", "inner"),
    "moe by experts": ("moe(x, experts=4, top_k=2, expert=swiglu(hidden=16))", "experts"),
}
OUTPUT_BIASES = ("o_proj.bias", "down_proj.bias", "out_proj.bias")


def shard_sum_error(call: str, kind: str, tp: int) -> float | str:
    import torch

    import archc
    from archc.backends.torch import build
    from archc.backends.torch.prune import new_params, prunable, sliced_state
    from archc.ops.registry import ShapeError
    from archc.passes.prune import prune

    spec = f"model m(tokens) {{\n  x = embed(tokens, 64, 32)\n  return lm_head({call}, tied=false)\n}}\n"
    torch.manual_seed(0)
    graph = archc.loads(spec, "m.arch").graph
    model = build(graph, pipeline="O0").double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        full = model(ids).logits
    units = prunable(model, [kind])
    uneven = sorted({u.axis.units for u in units if u.axis.units % tp})
    if uneven:  # a shard with no units, or unequal ones: the rule must replicate (kv heads) or refuse
        return f"not run: {uneven[0]} {kind} do not split {tp} ways"
    total = torch.zeros_like(full)
    for rank in range(tp):
        for u in units:
            n = u.axis.units
            u.keep = list(range(rank * n // tp, (rank + 1) * n // tp))
        state = sliced_state(model, units)
        if rank:
            state = {k: torch.zeros_like(v) if k.endswith(OUTPUT_BIASES) else v for k, v in state.items()}
        try:
            shard = build(prune(graph, new_params(units)), pipeline="O0").double().eval()
        except ShapeError as e:  # the contiguous share breaks the op's groups (GQA's query heads)
            return f"no such shard: {e.message}"
        shard.load_state_dict(state)
        with torch.no_grad():
            total += shard(ids).logits
    return float((total - full).abs().max())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tp", type=int, default=2)
    args = ap.parse_args()
    for name, (call, kind) in CASES.items():
        error = shard_sum_error(call, kind, args.tp)
        print(f"{name:32s} max |Σ shards − full| = " + (f"{error:.1e}" if isinstance(error, float) else error))


if __name__ == "__main__":
    main()
