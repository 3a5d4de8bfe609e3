"""Every causal language-model spec under `torch.compile`: the compiled forward, training step and
decode step against the eager ones, compile times, and decode speed. Results go to
docs/compiled_results.json and the table of docs/performance.md.

    .venv/bin/python tools/check_compiled.py [--only llama-tiny,mamba-tiny] [--max-params 6e7]

Per spec (fp32, 2 threads, batch 2):
* forward: max |compiled − eager| of the logits over 2×64 tokens, relative to max |eager|; and a
  copy compiled with dynamic shapes at lengths 40 and 77 (one graph for both);
* train: the same for the loss and every gradient of one training step (forward + backward);
* decode: a 16-token prompt, then 24 one-token steps of `generate(compile=True)` (the whole step
  one graph, `fullgraph=True`, the state updated in place) against the eager step's greedy
  tokens and logits (a step Dynamo cannot trace whole runs eagerly, and is listed so); seconds to
  compile it, and ms per token of both after a 128-token prompt
  (medians of 5, timed alternately), and their ratio.
A spec whose compile fails is listed with the first line of the error.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.results import load_results, publish, record, spec_paths  # noqa: E402

START, END = "<!-- compiled table: tools/check_compiled.py -->", "<!-- end of compiled table -->"


def _rel(a, b) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


def check(path: Path, args) -> dict:
    import torch

    import archc
    from archc.backends.torch.compiled import compile_model, decode_step

    graph = archc.load(str(path)).graph
    row: dict = {"spec": path.stem}
    params = archc.summary(str(path)).total.params
    if params > args.max_params:  # before building: a 175B spec's weights do not fit this machine
        return {**row, "skipped": f"{params:,} parameters (> --max-params)"}
    eager = archc.build(graph, seed=0).eval()
    if eager.head_loss != "lm" or not eager.causal or len(eager.input_names) != 1:
        return {**row, "skipped": "not a causal language model with one input"}
    vocab = eager.out_type_vocab()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (2, 64), generator=g)
    # forward
    compiled = compile_model(archc.build(graph, seed=0).eval(), dynamic=False)
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            got = compiled(ids).logits
        row["forward_compile_s"] = round(time.perf_counter() - t0, 1)
        with torch.no_grad():
            row["forward_rel"] = _rel(got, eager(ids).logits)
    except Exception as e:
        row["forward_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    # dynamic shapes: one compile serves two lengths (what the CI tests once did for these specs)
    try:
        dynamic = compile_model(archc.build(graph, seed=0).eval(), dynamic=True)
        worst = 0.0
        with torch.no_grad():
            for t in (40, 77):
                x = torch.randint(0, vocab, (2, t), generator=g)
                worst = max(worst, _rel(dynamic(x).logits, eager(x).logits))
        row["dynamic_rel"] = worst
    except Exception as e:  # recorded per spec
        row["dynamic_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    # train step: loss and gradients
    try:
        compiled.train()
        eager.train()
        torch.manual_seed(1)
        loss_c = compiled(ids, labels=ids).loss
        loss_c.backward()
        torch.manual_seed(1)
        loss_e = eager(ids, labels=ids).loss
        loss_e.backward()
        grads = [_rel(pc.grad, pe.grad) for pc, pe in zip(compiled.parameters(), eager.parameters(), strict=True)
                 if pe.grad is not None and pe.grad.abs().max() > 0]
        row["train_loss_rel"] = _rel(loss_c.detach(), loss_e.detach())
        row["train_grad_rel"] = max(grads)
    except Exception as e:
        row["train_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    finally:
        compiled.eval()
        eager.eval()
        eager.zero_grad(set_to_none=True)
    # decode: tokens and logits step by step
    try:
        prompt = ids[:, :16]
        state = eager.init_state(2, 16 + 24)
        with torch.no_grad():
            logits_e, state = eager.step(prompt, 0, state)
            dec = decode_step(eager, 2, 16 + 24)
            logits_c = dec.prefill(prompt)
            worst, same = 0.0, True
            for i in range(24):
                tok = logits_e[:, -1:].argmax(-1)
                same &= bool((logits_c[:, -1:].argmax(-1) == tok).all())
                logits_e, state = eager.step(tok, 16 + i, state)
                logits_c = dec(tok, 16 + i)
                worst = max(worst, _rel(logits_c, logits_e))
        row["decode_compile_s"] = round(dec.compile_seconds or 0.0, 1)
        row["decode_graph_break"] = dec.graph_break  # "" when the step is one graph
        row["decode_rel"] = worst
        row["decode_same_tokens"] = same
        # speed after a 128-token prompt
        long_prompt = torch.randint(0, vocab, (1, 128), generator=g)

        def per_token(compile: bool) -> float:
            t0 = time.perf_counter()
            eager.generate(long_prompt, max_new_tokens=33, compile=compile)
            t1 = time.perf_counter()
            eager.generate(long_prompt, max_new_tokens=1, compile=compile)
            return ((t1 - t0) - (time.perf_counter() - t1)) / 32

        per_token(True)
        per_token(False)
        ce, cc = [], []
        for _ in range(5):
            ce.append(per_token(False))
            cc.append(per_token(True))
        row["decode_eager_ms"] = round(1e3 * statistics.median(ce), 3)
        row["decode_compiled_ms"] = round(1e3 * statistics.median(cc), 3)
        row["decode_ratio"] = round(statistics.median(cc) / statistics.median(ce), 3)
    except Exception as e:
        row["decode_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        if args.verbose:
            traceback.print_exc()
    return row


def _fmt(x, spec: str = ".1e") -> str:
    return "—" if x is None else format(x, spec)


def table(results: dict) -> str:
    rows = ["| spec | forward: compile s, rel. error | dynamic shapes (T 40, 77): rel. error | "
            "train step: loss, worst gradient rel. error | decode: compile s, worst logits rel. error, same tokens | "
            "decode ms/token eager → compiled (ratio) |", "| --- | --- | --- | --- | --- | --- |"]
    for name, r in sorted(results.items()):
        if "skipped" in r:
            continue
        fwd = r.get("forward_error") or f"{r.get('forward_compile_s')} s, {_fmt(r.get('forward_rel'))}"
        train = r.get("train_error") or f"{_fmt(r.get('train_loss_rel'))}, {_fmt(r.get('train_grad_rel'))}"
        if "decode_error" in r:
            dec, speed = r["decode_error"], "—"
        else:
            dec = f"{r['decode_compile_s']} s, {_fmt(r['decode_rel'])}, {'yes' if r['decode_same_tokens'] else 'NO'}"
            if r.get("decode_graph_break"):
                dec = f"runs eagerly (not one graph: {r['decode_graph_break']}), {_fmt(r['decode_rel'])}"
            speed = f"{r['decode_eager_ms']:.2f} → {r['decode_compiled_ms']:.2f} ({r['decode_ratio']:.2f})"
        dyn = r.get("dynamic_error") or _fmt(r.get("dynamic_rel"))
        rows.append(f"| {name} | {fwd} | {dyn} | {train} | {dec} | {speed} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", help="comma-separated spec names")
    ap.add_argument("--max-params", type=float, default=6e7)
    ap.add_argument("--json", default=str(ROOT / "docs/compiled_results.json"))
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import torch
    import torch._inductor.config

    torch.set_num_threads(2)
    torch._inductor.config.fallback_random = True  # dropout draws what eager draws
    out = Path(args.json)
    results = load_results(out)
    for path in spec_paths(args.only):
        torch._dynamo.reset()  # Dynamo's recompile limit counts per code object, across models
        try:
            row = check(path, args)
        except Exception as e:
            row = {"spec": path.stem, "forward_error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
        if "skipped" in row:
            print(f"{path.stem}: skipped, {row['skipped']}", flush=True)
            continue
        record(out, results, path.stem, row)
    publish(out, ROOT / "docs/performance.md", START, END, table(results))


if __name__ == "__main__":
    main()
