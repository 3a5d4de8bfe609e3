"""Peak memory of the language-model head's loss and its gradients: PyTorch's F.linear +
F.cross_entropy (the logits formed whole) against archc's fused linear + cross-entropy kernel,
at Liger-Kernel's anchor (a 128k vocabulary). Each variant runs in its own process, and the figure
is that process's peak resident memory above its level once the inputs are allocated
(`ru_maxrss`), so allocator caching and the other variant do not blur it. On this CPU the Triton
kernel runs in its interpreter (`TRITON_INTERPRET=1`): the memory is the algorithm's, the time is
not a kernel's and is not reported.

    .venv/bin/python tools/bench_cross_entropy_memory.py [--rows 1024] [--width 512] [--vocab 131072]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(variant: str, rows: int, width: int, vocab: int) -> None:
    import resource

    import torch

    from archc.backends.torch.kernels.linear_cross_entropy.naive import naive_linear_cross_entropy
    from archc.backends.torch.kernels.linear_cross_entropy.triton import triton_linear_cross_entropy

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(rows, width, generator=g).requires_grad_()
    weight = (torch.randn(vocab, width, generator=g) * width ** -0.5).requires_grad_()
    labels = torch.randint(0, vocab, (rows,), generator=g)
    fn = naive_linear_cross_entropy if variant == "torch" else triton_linear_cross_entropy
    # warm up (imports, the kernel's render for this vocabulary) on a width of 1: no large buffers
    fn(torch.randn(2, 1, requires_grad=True), torch.randn(vocab, 1, requires_grad=True), None, labels[:2]).backward()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    loss = fn(hidden, weight, None, labels)
    loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"variant": variant, "peak_above_inputs_mb": (peak - base) / 1024, "loss": float(loss)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=131072)
    ap.add_argument("--child", choices=("torch", "triton"))
    args = ap.parse_args()
    if args.child:
        child(args.child, args.rows, args.width, args.vocab)
        return
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = {}
    for variant in ("torch", "triton"):
        r = subprocess.run([sys.executable, __file__, "--child", variant, "--rows", str(args.rows), "--width",
                            str(args.width), "--vocab", str(args.vocab)], capture_output=True, text=True, env=env,
                           cwd=ROOT, check=True)
        out[variant] = json.loads(r.stdout.strip().splitlines()[-1])
    logits_mb = args.rows * args.vocab * 4 / 2**20
    t, f = out["torch"]["peak_above_inputs_mb"], out["triton"]["peak_above_inputs_mb"]
    print(f"{args.rows} rows × {args.vocab:,} vocabulary, width {args.width} (fp32 logits: {logits_mb:.0f} MB): "
          f"torch {t:.0f} MB, fused {f:.0f} MB above the inputs (the weight's gradient, {args.vocab * args.width * 4 / 2**20:.0f} "
          f"MB, included) — {t / max(f, 1e-9):.1f}× less; "
          f"losses {out['torch']['loss']:.4f} / {out['triton']['loss']:.4f}")


if __name__ == "__main__":
    main()
