"""Every spec at full tiny size built with `kernels="triton"` against its `kernels="torch"` build, in
Triton's interpreter on this CPU: which kernel families bind, one training step's logits, loss and
every gradient, and a prefill and decode steps' logits. Results go to docs/kernels_results.json and
the table of docs/kernels.md. (CI checks the same on two-layer models of every family:
tests/backends/torch/kernels/.)

    .venv/bin/python tools/check_kernels.py [--only llama-tiny,mamba-tiny] [--max-params 6e7]

Per spec (fp32, batch 2): a training step over 40 tokens (not a multiple of any chunk), logits
formed (`skip_logits=False`), compared as max |triton − torch| / max |torch| for the logits and
the loss and the worst over the parameters' gradients (each relative to its own largest value,
floored at 1e-6 of the model's largest gradient); then, for causal LMs, a 12-token prefill
and 4 one-token steps under `torch.no_grad()` (the decode kernels' path), worst logits error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")  # before Triton is imported: run the kernels on the CPU

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.results import load_results, publish, record, spec_paths  # noqa: E402

START, END = "<!-- kernels table: tools/check_kernels.py -->", "<!-- end of kernels table -->"


def _rel(a, b) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


def _inputs(model, length: int, generator) -> dict:
    """Random inputs of `model`'s graph: token ids below the vocabulary of the embedding reading
    them, or features of the input's width."""
    import torch

    out = {}
    for name in model.input_names:
        node = model.graph.nodes[name]
        if node.params.get("dtype") == "int":
            vocab = min((int(n.params["vocab"]) for n in model.graph.walk() if n.op == "embed" and name in n.inputs),
                        default=64)
            out[name] = torch.randint(0, vocab, (2, length), generator=generator)
        else:
            out[name] = torch.randn(2, length, node.type.width, generator=generator)
    return out


def check(path: Path, args) -> dict:
    import torch

    import archc
    from archc.backends.torch import build

    row: dict = {"spec": path.stem}
    params = archc.summary(str(path)).total.params
    if params > args.max_params:  # before building: a 175B spec's weights do not fit this machine
        return {**row, "skipped": f"{params:,} parameters (> --max-params)"}
    graph = archc.load(str(path)).graph
    plain, fused = (build(graph, seed=0, kernels=k) for k in ("torch", "triton"))
    row["kernels"] = sorted({f"{family}" for _, m in fused.op_modules() for family in m.triton_kernels})
    if not row["kernels"]:
        return {**row, "skipped": "no node has a kernel"}
    row["params"] = params
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    try:
        inputs = _inputs(plain, 40, g)
    except (AttributeError, TypeError) as e:
        return {**row, "skipped": f"inputs this tool cannot make ({e})"}
    labels = inputs.get("tokens") if plain.head_loss == "lm" else None
    runs = []
    for model in (plain, fused):
        model.train()
        torch.manual_seed(1)  # the same dropout masks
        kwargs = {"labels": labels, "skip_logits": False} if labels is not None else {}
        out = model(**inputs, **kwargs)
        logits = out.logits if hasattr(out, "logits") else out
        loss = out.loss if getattr(out, "loss", None) is not None else logits.float().pow(2).mean()
        loss.backward()
        runs.append((logits.detach(), loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (want, want_loss, want_grads), (got, got_loss, grads) = runs
    row["logits_rel"] = _rel(got, want)
    row["loss_rel"] = _rel(got_loss, want_loss)
    # per parameter, relative to its largest torch value, floored at 1e-6 of the largest gradient
    # of the model: gradients that are zero in exact arithmetic (a key bias under softmax's shift
    # invariance) are rounding noise of 1e-12 in both builds
    floor = 1e-6 * max(float(w.abs().max()) for w in want_grads.values() if w is not None)
    row["grad_rel"] = max((float((grads[n] - w).abs().max()) / max(float(w.abs().max()), floor)
                           for n, w in want_grads.items() if w is not None), default=0.0)
    if plain.causal and plain.head_loss == "lm" and len(plain.input_names) == 1:
        ids = inputs["tokens"][:, :12]
        with torch.no_grad():
            outs = [m.eval().step(ids, 0, m.init_state(2, 16)) for m in (plain, fused)]
            worst = _rel(outs[1][0], outs[0][0])
            for i in range(4):
                tok = outs[0][0][:, -1:].argmax(-1)
                outs = [m.step(tok, 12 + i, s) for m, (_, s) in zip((plain, fused), outs, strict=True)]
                worst = max(worst, _rel(outs[1][0], outs[0][0]))
        row["decode_rel"] = worst
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def _fmt(x) -> str:
    return "—" if x is None else f"{x:.1e}"


def table(results: dict) -> str:
    rows = ["| spec | kernel families bound | train step: logits, loss, worst gradient (rel. error) | "
            "prefill + 4 decode steps: logits | s |", "| --- | --- | --- | --- | --- |"]
    for name, r in sorted(results.items()):
        if "skipped" in r:
            continue
        if "error" in r:
            rows.append(f"| {name} | {', '.join(r.get('kernels', []))} | {r['error']} | — | — |")
            continue
        train = f"{_fmt(r['logits_rel'])}, {_fmt(r['loss_rel'])}, {_fmt(r['grad_rel'])}"
        rows.append(f"| {name} | {', '.join(r['kernels'])} | {train} | {_fmt(r.get('decode_rel'))} | {r['seconds']} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", help="comma-separated spec names")
    ap.add_argument("--max-params", type=float, default=6e7)
    ap.add_argument("--json", default=str(ROOT / "docs/kernels_results.json"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(2)
    out = Path(args.json)
    results = load_results(out)
    for path in spec_paths(args.only):
        try:
            row = check(path, args)
        except Exception as e:  # recorded per spec: the table says which and why
            row = {"spec": path.stem, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
        if "skipped" in row:
            print(f"{path.stem}: skipped, {row['skipped']}", flush=True)
            results.pop(path.stem, None)
            continue
        record(out, results, path.stem, row)
    publish(out, ROOT / "docs/kernels.md", START, END, table(results))


if __name__ == "__main__":
    main()
