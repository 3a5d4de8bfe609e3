"""Issue #24's simulation: the planner against published training setups.

For each published run, the planner costs the published layout on the published cluster (its
degrees fixed with `--plan`), and chooses its own layout on the same cluster and on 1,024 80 GB
GPUs; the table puts its figures next to the published ones (docs/distributed.md).

Sources (figures as published):
* Megatron-LM, Narayanan et al. 2021 ("Efficient Large-Scale Language Model Training on GPU
  Clusters"): GPT-3 175B at TP 8 × PP 16 on 1,024 A100s, ~140 TFLOP/s a GPU; the 1T model at
  (TP, PP, DP) = (8, 64, 6) on 3,072 A100s, 163 TFLOP/s = 52% of peak. Their TFLOP/s count
  96·B·s·l·h²·(1 + s/6h + V/16lh) a step: full (non-causal) attention and activation recomputation
  included; the table computes the same formula over the planner's step time.
* torchtitan docs/performance.md: Llama 2 70B, FSDP on 64 A100 80GB, local batch 2, seq 4096,
  full activation checkpointing: 353 tokens/s a GPU (MFU 50.5%).
* torchtitan benchmarks (Dec 2024): Llama 3.1 70B on 256 H100s (96 GB, 500 W), FSDP 32 × TP 8,
  local batch 16, seq 8192, full checkpointing, torch.compile + Float8: 829 tokens/s a GPU.
* Megatron-Core MoE (v0.8 README): Mixtral 8x7B dropless on 64 H100 80GB, TP 1 EP 8 PP 4 VP 8,
  MBS 1, GBS 256, seq 4096: 438 TFLOP/s a GPU (bf16).

    .venv/bin/python tools/plan_published.py
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ONE_T = """model gpt_1t(tokens) {
  block layer(x) {
    x = x + attention(layernorm(x), heads=160, causal=true, bias=true)
    return x + mlp(layernorm(x), hidden=102400, act="gelu")
  }
  x = learned_pos(embed(tokens, 51200, 25600), max_len=2048)
  x = repeat(128, layer)(x)
  return lm_head(layernorm(x), tied=true)
}
"""

LLAMA3_70B = """model llama3_70b(tokens) {
  block decoder(x) {
    x = x + attention(rmsnorm(x, eps=1e-5), heads=64, kv_heads=8, causal=true, pos=rope(theta=500000))
    return x + swiglu(rmsnorm(x, eps=1e-5), hidden=28672)
  }
  x = embed(tokens, 128256, 8192)
  x = repeat(80, decoder)(x)
  return lm_head(rmsnorm(x, eps=1e-5), tied=false)
}
"""


@dataclass
class Setup:
    name: str
    spec: str  # a path under specs/ or spec text
    device: str
    devices: int
    seq: int
    global_batch: int
    plan: str
    published: str
    #: the published figure and how to read the planner's: ("tokens", n) tokens/s a GPU,
    #: ("megatron", n) TFLOP/s by Megatron's formula, ("model", n) model TFLOP/s
    figure: tuple[str, float]
    memory: int | None = None
    megatron: tuple[int, int, int] | None = None  # layers, hidden, vocab for Megatron's formula


SETUPS = [
    Setup("GPT-3 175B (Megatron-LM)", "specs/gpt3-175b.arch", "a100", 1024, 2048, 1536,
          "tp=8,pp=16,dp=8,mbs=1,checkpoint", "TP 8 × PP 16 × DP 8, recompute", ("megatron", 140),
          megatron=(96, 12288, 51200)),
    Setup("1T (Megatron-LM)", ONE_T, "a100", 3072, 2048, 3072, "tp=8,pp=64,dp=6,mbs=1,checkpoint",
          "TP 8 × PP 64 × DP 6, recompute", ("megatron", 163), megatron=(128, 25600, 51200)),
    Setup("Llama 2 70B (torchtitan)", "specs/llama2-70b.arch", "a100", 64, 4096, 128,
          "fsdp=64,mbs=2,checkpoint", "FSDP 64, local batch 2, full AC", ("tokens", 353)),
    Setup("Llama 3.1 70B (torchtitan)", LLAMA3_70B, "h100", 256, 8192, 512, "tp=8,fsdp=32,mbs=16,checkpoint",
          "FSDP 32 × TP 8, local batch 16, full AC, Float8", ("tokens", 829), memory=96 * 10**9),
    Setup("Mixtral 8x7B (Megatron-Core)", "specs/mixtral-8x7b.arch", "h100", 64, 4096, 256,
          "tp=1,ep=8,pp=4,v=8,mbs=1,zero=zero1", "TP 1 × EP 8 × PP 4, VP 8, distributed optimizer",
          ("model", 438)),
]


def _graph(spec: str):
    import archc

    return archc.loads(spec, "published.arch").graph if "\n" in spec else archc.load(str(ROOT / spec)).graph


def _figure(s: Setup, e, devices: int) -> float:
    if s.figure[0] == "tokens":
        return e.tokens / e.step / devices
    if s.figure[0] == "model":
        return e.tflops(devices)
    layers, h, v = s.megatron
    b, seq = s.global_batch, s.seq
    flops = 96 * b * seq * layers * h * h * (1 + seq / (6 * h) + v / (16 * layers * h))
    return flops / e.step / devices / 1e12


def main() -> None:
    from archc.parallel import PlanError, Workload, cluster_for, parse_plan, plan

    unit = {"tokens": "tokens/s/GPU", "megatron": "TFLOP/s/GPU (Megatron's count)", "model": "model TFLOP/s/GPU"}
    print("| setup | published layout | published | archc: same layout | archc's choice, same cluster | "
          "archc's choice, 1,024 × 80 GB | plan time |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for s in SETUPS:
        g = _graph(s.spec)
        work = Workload(seq=s.seq, global_batch=s.global_batch)
        cluster = cluster_for(s.devices, s.device, memory=s.memory)
        fixed = plan(g, cluster, work, parse_plan(s.plan), keep=0).best
        t0 = time.perf_counter()
        own = plan(g, cluster, work, keep=0)
        took = time.perf_counter() - t0
        big = cluster_for(1024, s.device, memory=80 * 10**9)
        try:
            at_1024 = plan(g, big, work, keep=0).best
            big_text = (f"{at_1024.layout.text()}, mbs {at_1024.layout.mbs}"
                        f"{', ckpt' if at_1024.layout.checkpoint else ''}: {_figure(s, at_1024, 1024):.0f}")
        except PlanError as e:
            big_text = f"refused: {e.message}"
        print(f"| {s.name} on {s.devices} × {cluster.label} | {s.published} | "
              f"{s.figure[1]:g} {unit[s.figure[0]]} | {_figure(s, fixed, s.devices):.0f} "
              f"({fixed.memory['total'] / 1e9:.0f} GB, MFU {fixed.tflops(s.devices) * 1e12 / cluster.device.peak:.0%}) | "
              f"{own.best.layout.text()}, mbs {own.best.layout.mbs}{', ckpt' if own.best.layout.checkpoint else ''}, "
              f"{own.best.layout.schedule}{' v=' + str(own.best.layout.virtual) if own.best.layout.virtual > 1 else ''}: "
              f"{_figure(s, own.best, s.devices):.0f} | {big_text} | {took:.2f} s |")


if __name__ == "__main__":
    main()
