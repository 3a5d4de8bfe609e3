"""O0 = O1 = O2 for every spec of `specs/` that fits this machine: the fused builds compute the
unfused build's function from the same weights — logits, decode steps and gradients — and the
table of docs/passes.md says so.

    .venv/bin/python tools/check_pipelines.py [--only llama-tiny,mamba-tiny] [--seq 24]

Per spec and level: what the pipeline fused (`fusion_report`), and the max |fused − unfused| of
the logits (batch 2, fp32, eval mode), of the logits of a prefill then one-token steps (causal
single-input models), and of every parameter's gradient of a loss on the logits (in the canonical
layout: a packed weight's gradient split as its weight is). The bound is `torch.allclose` with
rtol = atol = 1e-5; a value beyond it is recorded as infinity. Specs above `--max-params` (the 7B-class ones: three fp32 copies do
not fit in this machine's memory) are listed as skipped.
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.results import load_results, publish, record, spec_paths  # noqa: E402

TOL = 1e-5


def _inputs(model, batch: int, seq: int, gen) -> dict:
    """Random token ids for every input of the model, within the vocabulary its embedding reads."""
    import torch

    g = model.graph
    out = {}
    for name in g.inputs:
        vocabs = [int(n.params["vocab"]) for n in g.nodes.values() if name in n.inputs and "vocab" in n.params]
        out[name] = torch.randint(0, min(vocabs) if vocabs else 2, (batch, seq), generator=gen)
    return out


def _gap(a, b) -> float:
    """max |a − b|, or infinity where `assert_close(a, b, rtol=TOL, atol=TOL)` would fail (so one
    number says both the size and whether it is within the bound)."""
    import torch

    return float((a - b).abs().max()) if torch.allclose(a, b, rtol=TOL, atol=TOL) else float("inf")


def _run(model, feeds: dict):
    out = model(**feeds)
    loss = out.logits.float().pow(2).mean() + (out.aux_loss if out.aux_loss is not None else 0)
    model.zero_grad(set_to_none=True)
    loss.backward()
    return out.logits.detach()


def _steps(model, ids, prefill: int):
    import torch

    state = model.init_state(ids.shape[0], ids.shape[1])
    outs = []
    with torch.no_grad():
        logits, state = model.step(ids[:, :prefill], 0, state)
        outs.append(logits)
        for t in range(prefill, ids.shape[1]):
            logits, state = model.step(ids[:, t:t + 1], t, state)
            outs.append(logits)
    return torch.cat(outs, 1)


def check(path: Path, seq: int) -> dict:
    import torch

    import archc
    from archc.backends.torch.module import canonical_layout
    from archc.passes.rewrite import fusion_report

    graph = archc.load(str(path)).graph
    gen = torch.Generator().manual_seed(0)
    base = archc.build(graph, seed=0, pipeline="O0").eval()
    feeds = _inputs(base, 2, seq, gen)
    want = _run(base, feeds)
    want_grads = {k: p.grad for k, p in base.named_parameters() if p.grad is not None}
    decodes = base.causal and len(base.input_names) == 1
    want_steps = _steps(base, feeds[base.input_names[0]], seq // 2) if decodes else None
    row: dict = {"spec": path.stem}
    for level in ("O1", "O2"):
        fused = archc.build(graph, seed=0, pipeline=level).eval()
        made, refused = fusion_report(fused.graph)
        got = _run(fused, feeds)
        grads = canonical_layout(fused, {k: p.grad for k, p in fused.named_parameters() if p.grad is not None})
        assert grads.keys() == want_grads.keys(), sorted(grads.keys() ^ want_grads.keys())[:4]
        r = {"fused": dict(Counter(f.rewrite for f in made)), "not_fused": dict(Counter(f.rewrite for f in refused)),
             "logits": _gap(got, want), "grads": max(_gap(grads[k], want_grads[k]) for k in want_grads)}
        if decodes:
            r["steps"] = _gap(_steps(fused, feeds[base.input_names[0]], seq // 2), want_steps)
        r["ok"] = all(r[k] != float("inf") for k in ("logits", "grads", "steps") if k in r)
        row[level] = r
    row["status"] = "ok" if row["O1"]["ok"] and row["O2"]["ok"] else "parity FAILED"
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", help="comma-separated spec names")
    ap.add_argument("--seq", type=int, default=24)
    ap.add_argument("--max-params", type=float, default=5e8)
    ap.add_argument("--json", default="docs/pipelines_results.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    import torch

    from archc import load
    from archc.ir.cost import CostCtx
    from archc.passes.estimate_cost import estimate_cost

    torch.set_num_threads(2)
    specs = spec_paths(args.only)
    results_path = ROOT / args.json
    results = load_results(results_path)
    for path in specs:
        params = estimate_cost(load(str(path)).graph, CostCtx(seq=16)).total.params
        if params > args.max_params:
            row = {"spec": path.stem,
                   "status": f"skipped: {params / 1e9:.1f}B parameters (three fp32 builds exceed this machine's memory)"}
        else:
            try:
                row = check(path, args.seq)
            except Exception as e:  # the table must show a failure, not hide it
                traceback.print_exc(limit=4)
                row = {"spec": path.stem, "status": f"error: {type(e).__name__}: {str(e).splitlines()[0][:160]}"}
        record(results_path, results, path.stem, row)
    publish(results_path, ROOT / "docs" / "passes.md", START, END, table(results))


START, END = "<!-- pipeline table: tools/check_pipelines.py -->", "<!-- end of pipeline table -->"


def _cell(r: dict | None, key: str) -> str:
    if not r or key not in r:
        return "—"
    return f"{r[key]:.1e}"


def table(results: dict) -> str:
    head = ["spec", "fused at O2", "not fused (why: `archc passes SPEC --pipeline O2`)", "logits O1 / O2",
            "steps O1 / O2", "gradients O1 / O2", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name in sorted(results):
        r = results[name]
        o1, o2 = r.get("O1"), r.get("O2")
        fused = ", ".join(f"{k} ×{v}" for k, v in sorted((o2 or {}).get("fused", {}).items())) or "—"
        refused = ", ".join(f"{k} ×{v}" for k, v in sorted((o2 or {}).get("not_fused", {}).items())) or "—"
        cells = [name, fused, refused, f"{_cell(o1, 'logits')} / {_cell(o2, 'logits')}",
                 f"{_cell(o1, 'steps')} / {_cell(o2, 'steps')}", f"{_cell(o1, 'grads')} / {_cell(o2, 'grads')}",
                 r.get("status", "").replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)




if __name__ == "__main__":
    main()
