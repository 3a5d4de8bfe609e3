"""The Mamba paper's synthetic tasks and zoology's MQAR sweep, reproduced with `archc train` and
`archc eval --task` at a size this machine trains in minutes; writes docs/results.md (its tables,
between markers, and the MQAR plot docs/results_mqar.png) from docs/results_synthetic.json.

    .venv/bin/python tools/synthetic_results.py [--only selective_copy,induction_heads,mqar]
        [--rows mamba,attention] [--steps 1500] [--batch 32] [--lr 3e-3] [--jobs 2] [--device cuda]
        [--out /tmp/archc-synthetic]

Every row is one 2-layer model (its mixer, then a SwiGLU feed-forward, pre-norm residual blocks)
written as a spec, trained by `archc train --task T` (AdamW, warmup + cosine, seed 0) and scored by
`archc eval --task T --json` on sequences drawn with a seed training never uses. Results are merged
by key, so a run that dies keeps what it measured, and `--rows` reruns a few.

* selective copying (Gu & Dao 2023, Table 1): 16 data tokens among blanks, vocabulary 16,
  128 tokens (the paper: 4096), accuracy on the copied tokens;
* induction heads (Table 2): `induction_heads` (one marker, its answer, the marker again), trained
  at 128 tokens (the paper: 256) and scored at 64 … 4096 — length extrapolation;
* MQAR (Arora et al. 2023, Zoology): 4 key–value pairs in 64 tokens, the queries among blanks as
  Zoology lays them out, vocabulary 64, each mixer at widths 32, 64 and 128;
  accuracy against the decode state per sequence (archc's cost model: bytes at the task's length),
  plotted.

`--jobs 2` trains two rows at once, each on one thread (rows are independent; a 2-core machine
runs the sweep in half the wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.results import ROOT, load_results, publish, record

JSON = ROOT / "docs" / "results_synthetic.json"
DOC = ROOT / "docs" / "results.md"
PLOT = ROOT / "docs" / "results_mqar.png"
START, END = "<!-- synthetic tables: tools/synthetic_results.py -->", "<!-- end of synthetic tables -->"


def mixers(d: int) -> dict[str, str]:
    """Each row's mixer call on `rmsnorm(x)` at width d (heads of 16)."""
    h = max(1, d // 16)
    return {
        "attention": f"attention(rmsnorm(x), heads={h}, causal=true, pos=rope())",
        "s4": "s4(rmsnorm(x), d_state=64, mode=\"dplr\", discretization=\"bilinear\")",
        "s4d": "s4(rmsnorm(x), d_state=64, mode=\"diag\", discretization=\"zoh\")",
        "hyena": "hyena(rmsnorm(x), max_len=4096, filter_order=32)",
        "linear_attention": f"linear_attention(rmsnorm(x), heads={h}, feature_map=\"elu\", causal=true)",
        "mamba": "mamba(rmsnorm(x), d_state=16, expand=2, d_conv=4)",
        "mamba2": "mamba2(rmsnorm(x), d_state=16, expand=2, head_dim=16, chunk=32)",
        "retention": f"retention(rmsnorm(x), heads={h})",
        "gla": f"gla(rmsnorm(x), heads={h})",
        "gated_deltanet": f"gated_deltanet(rmsnorm(x), heads={h}, head_dim=16)",
        "rwkv6": "rwkv_time_mix(rmsnorm(x), version=6, head_size=16, mix_rank=8, decay_rank=16)",
        "rwkv7": "rwkv7_time_mix(rmsnorm(x), head_dim=16)",
        "mlstm": f"mlstm(rmsnorm(x), heads={h}, expand=2, d_conv=4)",
    }


def spec(mixer: str, vocab: int, d: int) -> str:
    return f"""model synthetic(tokens) {{
  vocab = {vocab}
  d = {d}

  block layer(x) {{
    x = x + {mixer}
    return x + swiglu(rmsnorm(x), hidden=2 * d)
  }}

  x = embed(tokens, vocab, d)
  x = repeat(2, layer)(x)
  return lm_head(rmsnorm(x))
}}
"""


#: experiment -> (task, vocabulary, train length, eval lengths, widths, rows, paper's numbers)
EXPERIMENTS = {
    "selective_copy": ("selective_copy", 16, 128, (128,), (64,),
                       ("s4", "s4d", "hyena", "linear_attention", "mamba", "mamba2", "attention"),
                       {"s4": "18.3 (S4, no gate)", "hyena": "30.1 (Hyena in H3)", "mamba": "99.8 (Mamba, S6)",
                        "s4d": "—", "linear_attention": "—", "mamba2": "—", "attention": "—"}),
    "induction_heads": ("induction_heads", 16, 128, (64, 128, 256, 512, 1024, 4096), (64,),
                        ("attention", "hyena", "s4d", "mamba", "mamba2"),
                        {"attention": "fails beyond 2× (MHA-RoPE)", "hyena": "fails beyond 2×",
                         "mamba": "100 up to 2^20", "s4d": "—", "mamba2": "—"}),
    "mqar": ("mqar", 64, 64, (64,), (32, 64, 128),
             ("attention", "mamba", "mamba2", "gla", "gated_deltanet", "retention", "rwkv6", "rwkv7", "hyena",
              "s4d", "linear_attention", "mlstm"), {}),
}
#: the task's own flags, for `archc train` and `archc eval`
TASK_FLAGS = {"mqar": ("--pairs", "4")}


_IMPORT = threading.Lock()


def state_bytes(path: Path, seq: int) -> int:
    """The decode state per sequence at `seq` tokens, from archc's cost model (one thread at a time:
    the op registry fills itself on first use)."""
    with _IMPORT:
        return _state_bytes(path, seq)


def _state_bytes(path: Path, seq: int) -> int:
    import archc
    from archc.ir.cost import CostCtx
    from archc.passes.estimate_cost import estimate_cost

    return int(estimate_cost(archc.load(str(path)).graph, CostCtx(seq=seq, batch=1, dtype="fp32")).total.state_bytes)


def run_row(exp: str, row: str, d: int, args: argparse.Namespace) -> dict:
    task, vocab, train_len, eval_lens, _, _, paper = EXPERIMENTS[exp]
    folder = Path(args.out) / f"{exp}-{row}-{d}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.arch"
    path.write_text(spec(mixers(d)[row], vocab, d))
    py = [sys.executable, "-m", "archc"]
    flags = TASK_FLAGS.get(exp, ())
    device = ("--device", args.device) if args.device else ()  # training's; scoring runs on the CPU
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if args.jobs > 1 else None
    t0 = time.perf_counter()
    train = subprocess.run([*py, "train", str(path), "--task", task, *flags, *device, "--steps", str(args.steps), "--seq",
                            str(train_len), "--batch", str(args.batch), "--lr", str(args.lr), "--warmup",
                            str(args.steps // 10), "-o", str(folder / "run"), "--force", "-q"],
                           capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    out: dict = {"experiment": exp, "row": row, "d": d, "steps": args.steps, "batch": args.batch,
                 "device": args.device or "cpu",
                 "threads": 1 if args.jobs > 1 else os.cpu_count(), "train_s": round(seconds, 1),
                 "paper": paper.get(row, "")}
    if train.returncode != 0:
        out["error"] = (train.stderr.strip().splitlines() or ["?"])[-1][:300]
        return out
    acc = {}
    for length in eval_lens:
        ev = subprocess.run([*py, "eval", str(path), "--weights", str(folder / "run" / "last.safetensors"), "--task",
                             task, *flags, "--seq", str(length), "--batches", "8", "--batch", "16", "--json", "-q"],
                            capture_output=True, text=True, env=env)
        if ev.returncode != 0:
            acc[str(length)] = None
            out.setdefault("eval_errors", {})[str(length)] = (ev.stderr.strip().splitlines() or ["?"])[-1][:200]
            continue
        acc[str(length)] = json.loads(ev.stdout.strip().splitlines()[-1])["accuracy"]
    out["accuracy"] = acc
    out["state_bytes"] = state_bytes(path, train_len)
    return out


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def _rows(results: dict, exp: str) -> list[dict]:
    """The experiment's rows in its own row order (the paper's), then by width."""
    order = EXPERIMENTS[exp][5]
    rows = [r for r in results.values() if r["experiment"] == exp]
    return sorted(rows, key=lambda r: (order.index(r["row"]) if r["row"] in order else len(order), r["d"]))


def tables(results: dict) -> str:
    out = []
    rows = _rows(results, "selective_copy")
    if rows:
        out += ["**Selective copying** (Table 1's setting at 128 tokens, vocabulary 16, 16 data tokens; "
                "2 layers, d = 64; accuracy % on the copied tokens):", "",
                "| mixer | archc | paper (Table 1, 4096 tokens) | steps | train s |", "| --- | --- | --- | --- | --- |"]
        for r in rows:
            out.append(f"| {r['row']} | {_pct((r.get('accuracy') or {}).get('128'))} | {r['paper']} | {r['steps']} | "
                       f"{r['train_s']} |" if "error" not in r else f"| {r['row']} | error: {r['error']} | | | |")
        out.append("")
    rows = _rows(results, "induction_heads")
    if rows:
        lens = EXPERIMENTS["induction_heads"][3]
        out += ["**Induction heads** (Table 2's setting: trained at 128 tokens, vocabulary 16; accuracy % of "
                "the answer at each test length):", "",
                "| mixer | " + " | ".join(str(n) for n in lens) + " | paper (Table 2) |",
                "| --- |" + " --- |" * (len(lens) + 1)]
        for r in rows:
            acc = r.get("accuracy") or {}
            out.append(f"| {r['row']} | " + " | ".join(_pct(acc.get(str(n))) for n in lens) + f" | {r['paper']} |")
        out.append("")
    rows = _rows(results, "mqar")
    if rows:
        budget = sorted({(r["steps"], r.get("batch", 32)) for r in rows})
        out += ["**MQAR** (4 key–value pairs in 64 tokens, the queries among blanks, vocabulary 64; "
                + ", ".join(f"{st} steps at batch {b}" for st, b in budget)
                + "; accuracy % of the recalled values against the decode state per sequence at 64 tokens, fp32; "
                "plot: `results_mqar.png`):", "",
                "| mixer | d | state | accuracy |", "| --- | --- | --- | --- |"]
        for r in rows:
            kib = r.get("state_bytes")
            out.append(f"| {r['row']} | {r['d']} | {'—' if kib is None else f'{kib / 1024:.1f} KiB'} | "
                       f"{_pct((r.get('accuracy') or {}).get('64'))} |")
    return "\n".join(out)


def plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results.values() if r["experiment"] == "mqar" and r.get("accuracy")]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = sorted({r["row"] for r in rows})
    for i, name in enumerate(names):  # 12 mixers: tab20's colors and two markers keep the lines apart
        pts = sorted((r["state_bytes"], r["accuracy"]["64"]) for r in rows if r["row"] == name
                     and r["accuracy"].get("64") is not None)
        if pts:
            ax.plot([p[0] / 1024 for p in pts], [100 * p[1] for p in pts], marker="os"[i % 2], label=name,
                    color=plt.cm.tab20(i / max(1, len(names) - 1)))
    vocab = EXPERIMENTS["mqar"][1]
    ax.axhline(100 / (vocab - 3 - (vocab - 3) // 2), color="grey", ls=":", lw=1, label="chance")  # the values' ids
    ax.set_xscale("log")
    ax.set_xlabel("decode state per sequence at 64 tokens (KiB, fp32)")
    ax.set_ylabel("MQAR accuracy (%)")
    ax.set_title("MQAR: accuracy against state size (widths 32, 64, 128)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="experiments, comma-separated (selective_copy,induction_heads,mqar)")
    ap.add_argument("--rows", help="mixers, comma-separated (default: each experiment's)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--jobs", type=int, default=1, help="rows trained at once, one thread each")
    ap.add_argument("--device", choices=("cpu", "cuda"), help="train on this device (the paper's budgets are a GPU's)")
    ap.add_argument("--out", default="/tmp/archc-synthetic")
    ap.add_argument("--json", default=str(JSON.relative_to(ROOT)))
    ap.add_argument("--render", action="store_true", help="only rewrite docs/results.md's tables and the plot")
    args = ap.parse_args()
    results_path = ROOT / args.json
    results = load_results(results_path)
    todo = [(exp, row, d) for exp in ((args.only.split(",") if args.only else EXPERIMENTS) if not args.render else ())
            for row in EXPERIMENTS[exp][5] if not args.rows or row in args.rows.split(",")
            for d in EXPERIMENTS[exp][4]]
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:  # each row is its own `archc` processes
        futures = {pool.submit(run_row, exp, row, d, args): (exp, row, d) for exp, row, d in todo}
        for future in futures:  # recorded in submission order, each as soon as it and those before it end
            exp, row, d = futures[future]
            record(results_path, results, f"{exp}/{row}/{d}", future.result())
    if results_path != JSON:  # a trial run's results stay out of the docs
        print(tables(results))
        return
    publish(results_path, DOC, START, END, tables(results))
    if any(r["experiment"] == "mqar" for r in results.values()):
        plot(results)


if __name__ == "__main__":
    main()
