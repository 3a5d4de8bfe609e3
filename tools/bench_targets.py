"""Issue #25's CPU targets, measured with `archc bench` (archc/bench.py): archc eager and compiled
against transformers, side by side in one process, 2 threads, fp32. Results go to
docs/bench_results.json and the tables of docs/performance.md.

    .venv/bin/python tools/bench_targets.py [--repeat 5] [--only llama,mamba,recurrent]

* llama-tiny vs `LlamaForCausalLM`: forward 1×512, train step 4×256, decode per token after 128
  (targets: forward ≤ 0.7×, train ≤ 0.7×, compiled decode ≤ 0.25× of transformers' eager decode),
  and the forward's share of this machine's matmul peak (a 1024² fp32 matmul, same run);
* mamba-tiny vs `MambaForCausalLM`: forward 1×2048, train 4×256, decode (targets: decode ≤ 0.3×,
  forward ≥ 5× faster, train ≥ 20× faster);
* every recurrent tiny spec's compiled decode per token, and its ratio to llama-tiny's measured in
  the same run (target: within 2×);
* the other specs with a transformers twin (`--only twins`): mixtral-tiny, mamba2-tiny, rwkv-tiny
  and qwen3-next-tiny (Gated DeltaNet), forward 1×512, train 4×256, decode (no targets: reported).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.results import load_results, publish, record  # noqa: E402

PAIRS_START, PAIRS_END = "<!-- bench table: tools/bench_targets.py -->", "<!-- end of bench table -->"
REC_START, REC_END = "<!-- recurrent decode table: tools/bench_targets.py -->", "<!-- end of recurrent decode table -->"
RECURRENT = ("mamba-tiny", "mamba2-tiny", "retnet-tiny", "rwkv-tiny", "rwkv6-tiny", "xlstm-tiny", "gated-deltanet-tiny",
             "s4-lm", "s4-dplr-lm", "jamba-tiny", "qwen3-next-tiny")
#: the other specs that are exactly a transformers model (archc bench --vs hf finds them)
TWINS = ("mixtral-tiny", "mamba2-tiny", "rwkv-tiny", "qwen3-next-tiny")


def pair(name: str, seq: int, repeat: int) -> dict:
    import torch

    from archc.bench import Setup, bench

    torch._dynamo.reset()  # Dynamo's recompile limit counts per code object, across models
    report = bench(str(ROOT / "specs" / f"{name}.arch"), Setup(forward_seqs=(seq,), repeat=repeat),
                   progress=lambda w: print(f"  {name}: {w}", flush=True))
    return report.to_json()


def recurrent(repeat: int) -> dict:
    import torch

    from archc.bench import COMPILED, Setup, bench

    out = {}
    for name in ("llama-tiny", *RECURRENT):
        torch._dynamo.reset()
        report = bench(str(ROOT / "specs" / f"{name}.arch"), Setup(workloads=("decode",), repeat=repeat, vs_hf=False),
                       progress=lambda w, n=name: print(f"  {n}: {w}", flush=True))
        t = {x.runner: x for x in report.timings}
        out[name] = {"eager_ms": 1e3 * t["archc eager"].median, "compiled_ms": 1e3 * t[COMPILED].median,
                     "compile_s": report.compile_seconds.get("decode after 128")}
    base = out["llama-tiny"]["compiled_ms"]
    for row in out.values():
        row["vs_llama"] = row["compiled_ms"] / base
    return out


def _t(report: dict, workload: str, runner: str) -> dict | None:
    return next((t for t in report["timings"] if t["workload"] == workload and t["runner"] == runner), None)


def pairs_table(results: dict) -> str:
    rows = ["| model | workload | archc eager | archc compiled | transformers | eager ÷ HF | compiled ÷ HF | "
            "of matmul peak: eager / compiled / HF |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key in ("llama", "mamba", *TWINS):
        rep = results.get(key)
        if not rep:
            continue
        for workload in ("forward", "train", "decode"):
            e, c, h = (_t(rep, workload, r) for r in ("archc eager", "archc compiled", "transformers"))
            if not (e and c and h):
                continue
            unit, scale = ("ms/token", 1e3) if workload == "decode" else ("ms", 1e3)
            peak = (" / ".join(f"{t['peak_fraction']:.1%}" for t in (e, c, h)) if workload == "forward" else "")
            rows.append(f"| {rep['spec']} | {workload} {e['shape']} | {e['median'] * scale:.2f} {unit} | "
                        f"{c['median'] * scale:.2f} {unit} | {h['median'] * scale:.2f} {unit} | {e['ratio']:.2f} | "
                        f"{c['ratio']:.2f} | {peak} |")
    return "\n".join(rows)


def recurrent_table(results: dict) -> str:
    rec = results.get("recurrent", {})
    rows = ["| spec | decode ms/token: eager | compiled | compiled ÷ eager | ÷ llama-tiny compiled | compile s |",
            "| --- | --- | --- | --- | --- | --- |"]
    for name, r in rec.items():
        rows.append(f"| {name} | {r['eager_ms']:.2f} | {r['compiled_ms']:.2f} | {r['compiled_ms'] / r['eager_ms']:.2f} "
                    f"| {r['vs_llama']:.2f} | {r['compile_s'] or 0:.1f} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", default="llama,mamba,recurrent,twins")
    ap.add_argument("--json", default=str(ROOT / "docs/bench_results.json"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(2)
    out = Path(args.json)
    results = load_results(out)
    only = args.only.split(",")
    if "llama" in only:
        record(out, results, "llama", pair("llama-tiny", 512, args.repeat))
    if "mamba" in only:
        record(out, results, "mamba", pair("mamba-tiny", 2048, args.repeat))
    if "twins" in only:
        for name in TWINS:
            record(out, results, name, pair(name, 512, args.repeat))
    if "recurrent" in only:
        record(out, results, "recurrent", recurrent(args.repeat))
    publish(out, ROOT / "docs/performance.md", PAIRS_START, PAIRS_END, pairs_table(results))
    publish(out, ROOT / "docs/performance.md", REC_START, REC_END, recurrent_table(results))


if __name__ == "__main__":
    main()
