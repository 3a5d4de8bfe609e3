"""Terminal rendering of a `CostReport` (`archc summary`), as a rich table."""

from __future__ import annotations

from archc.ir.graph import Graph
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
