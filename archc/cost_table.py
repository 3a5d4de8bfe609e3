"""Terminal rendering of a `CostReport` (`archc summary`) and a `ParallelPlan` (`archc plan`), as
rich tables."""

from __future__ import annotations

from archc.ir.graph import Graph
from archc.parallel.search import ParallelPlan
from archc.passes.estimate_cost import CostReport


def human(n: float, unit: str = "") -> str:
    for suffix, scale in (("Y", 1e24), ("Z", 1e21), ("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}" if float(n).is_integer() else f"{n:.2f}{unit}"


def human_bytes(n: float) -> str:
    for suffix, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {suffix}"
    return f"{n:.0f} B"


def _compress(rows: list[tuple[str, list[str], object]]) -> list[tuple[str, list[str], object]]:
    """Fold runs of identical layers (`layers.0` … `layers.31`) into one row `layers.0-31 ×32`."""
    import re

    out: list[tuple[str, list[str], object]] = []
    for name, ops, cost in rows:
        m = re.match(r"^(.*)\.(\d+)$", name)
        if out and m:
            prev_name, prev_ops, prev_cost = out[-1]
            pm = re.match(r"^(.*)\.(\d+)(?:-(\d+))?$", prev_name)
            if pm and pm.group(1) == m.group(1) and prev_ops == ops and prev_cost == cost:
                out[-1] = (f"{pm.group(1)}.{pm.group(2)}-{m.group(2)}", ops, cost)
                continue
        out.append((name, ops, cost))
    return out


def print_report(graph: Graph, report: CostReport, depth: int = 1) -> None:
    from rich.console import Console
    from rich.table import Table

    c = report.ctx
    table = Table(title=f"{graph.name}  (seq {c.seq}, batch {c.batch}, {c.dtype})", title_justify="left")
    for col in ("layer", "ops", "params", "FLOPs/token", "train act.", "state"):
        table.add_column(col, justify="left" if col in ("layer", "ops") else "right")
    rows = [(k, report.ops[k], v) for k, v in report.layers.items()]
    for name, ops, cost in (rows if depth > 1 else _compress(rows)):
        count = ""
        if "-" in name.rsplit(".", 1)[-1]:
            a, b = name.rsplit(".", 1)[-1].split("-")
            count = f" ×{int(b) - int(a) + 1}"
        table.add_row(name + count, ", ".join(ops), f"{cost.params:,}", human(cost.flops),
                      human_bytes(cost.act_bytes * c.seq * c.batch), human_bytes(cost.state_bytes * c.batch))
    t = report.total
    table.add_section()
    table.add_row("total", "", f"{t.params:,}", human(t.flops), human_bytes(t.act_bytes * c.seq * c.batch),
                  human_bytes(t.state_bytes * c.batch))
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    console.print(table)
    console.print(f"parameters: {t.params:,} ({human(t.params)}), weights {human_bytes(t.params * c.dtype_bytes)} "
                  f"in {c.dtype}")
    console.print(f"forward FLOPs per token at seq {c.seq}: {human(t.flops)}")
    console.print(f"inference state per sequence at {c.seq} tokens: {human_bytes(t.state_bytes)}")
    console.print(f"compute-optimal training tokens (Chinchilla, 20/param): {human(report.chinchilla_tokens)} "
                  f"(≈{human(report.training_flops)} FLOPs)")


def _stage_text(stages: list[list[str]], pp: int) -> list[str]:
    """One line per pipeline rank: its virtual stages' first and last layers."""
    out = []
    for r in range(pp):
        parts = [f"{s[0]}…{s[-1]}" if len(s) > 1 else s[0] for s in stages[r::pp]]
        out.append(f"rank {r}: " + " + ".join(parts))
    return out


def print_plan(plan: ParallelPlan) -> None:
    """`archc plan`'s table: the chosen layout and runners-up, then the chosen one's memory and
    step time broken down, its pipeline stages, replicated ops and the assumptions."""
    from rich.console import Console
    from rich.table import Table

    c, w = plan.cluster, plan.work
    title = (f"{plan.model} on {c.devices} × {c.label} ({c.nodes} node{'s' if c.nodes > 1 else ''}), "
             f"seq {w.seq}, global batch {w.global_batch}, {w.dtype}")
    table = Table(title=title, title_justify="left")
    for col in ("", "layout", "micro-batches", "memory/dev", "step", "tokens/s", "MFU"):
        table.add_column(col, justify="left" if col in ("", "layout") else "right")
    rows = [("chosen", plan.best, "")] + [(f"#{i + 2}", e, why) for i, (e, why) in enumerate(plan.runners_up)]
    for label, e, _ in rows:
        L = e.layout
        how = [L.text(), L.schedule + (f" v={L.virtual}" if L.virtual > 1 else "") if L.pp > 1 else "",
               L.zero if L.zero != "fsdp" and L.dp * L.cp > 1 else "", "checkpointing" if L.checkpoint else ""]
        mfu = e.tflops(c.devices) * 1e12 / c.device.peak
        table.add_row(label, " ".join(h for h in how if h), f"{L.mbs} × {e.microbatches}",
                      human_bytes(e.memory["total"]), f"{e.step:.3g} s", human(e.tokens / e.step), f"{mfu:.0%}")
    console = Console()
    console.print(table)
    for label, e, why in rows[1:]:
        console.print(f"  {label} {e.layout.text()}: {why}")
    best = plan.best
    console.print(f"\nmemory per device ({human_bytes(c.device.memory)}): " + ", ".join(
        f"{k} {human_bytes(v)}" for k, v in best.memory.items() if v and k != "total"))
    console.print("step time: " + ", ".join(f"{k} {v:.3g} s" for k, v in best.time.items() if v and k != "total"))
    if best.layout.pp > 1:
        console.print("pipeline stages (balanced by FLOPs; an even split by layer count would make the slowest "
                      f"stage {plan.count_split_ratio:.2f}× as slow):")
        for line in _stage_text(best.stages, best.layout.pp):
            console.print("  " + line)
    if best.replicated:
        console.print("replicated under tensor parallelism:")
        for r in best.replicated:
            console.print("  " + r)
    source = ("archc's eager PyTorch modules, measured on fake tensors" if plan.activations == "eager"
              else "fused kernels' (the cost model; --activations eager for today's PyTorch modules)")
    console.print(f"activations: {source}")
    console.print(f"{plan.fitting} of {plan.considered} layouts fit. Assumptions: {c.efficiency:.0%} of peak on "
                  "compute; tensor-parallel and all-to-all traffic not overlapped; ring attention and FSDP gathers "
                  "overlapped with compute; gradients reduced during the last backward (docs/distributed.md).")
