"""onnxruntime against archc's torch eager, side by side in one process: prefill of 1×512 tokens
and decode ms/token after a 128-token prompt, fp32, 2 threads each, on the tiny specs.

    .venv/bin/python tools/bench_onnx.py [--specs llama-tiny,mamba-tiny] [--out /tmp/archc-bench]
        [--threads 2] [--repeats 5]

Each spec is exported (random init, seed 0) and both runtimes decode the same tokens; the
figures are medians of `--repeats` runs after a warm-up. Ratios are onnxruntime ÷ torch (< 1:
onnxruntime faster). Export time is the `archc export` wall time.

The export is `--target ort` (archc's default: onnxruntime's fused operators where they compute
the op's math) and, side by side, `--target onnx` (standard operators only: the mixers traced
from their torch modules, the graphs of docs/onnx.md's earlier tables); "ort ÷ onnx" is the
ratio of the two decoders' times.

With `--two-graphs`, a traced recurrent decoder (one graph that branches on the length, `If`) is
also measured against the alternative of a prefill graph and a step graph over one weights file:
each branch lifted out into a graph of its own (`_one_branch`), timed the same way.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT = "llama-tiny,mixtral-tiny,mamba-tiny,mamba2-tiny,retnet-tiny,rwkv-tiny,xlstm-tiny"


def decode_ms(step, prompt, state, tokens: int, prefill=None) -> float:
    """Seconds per token of greedy decoding after `prompt`: `step(ids, start, state) -> (logits,
    state)` for a torch model or an onnxruntime one alike (their argmax reads the same);
    `prefill` takes the prompt when the step graph cannot (the two-graph variant)."""
    logits, state = (prefill or step)(prompt, 0, state)
    nxt = logits[:, -1:].argmax(-1)
    t0 = time.perf_counter()
    for i in range(tokens):
        logits, state = step(nxt, prompt.shape[1] + i, state)
        nxt = logits[:, -1:].argmax(-1)
    return (time.perf_counter() - t0) / tokens


def median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _one_branch(folder: Path, out: Path, branch: str) -> Path:
    """A copy of the export whose graph is one branch of its `If` ("then_branch": prefill,
    "else_branch": one-token decode), lifted into the main graph."""
    import shutil

    import onnx
    from onnx import helper

    proto = onnx.load(folder / "model.onnx")
    graph = proto.graph
    (node,) = [n for n in graph.node if n.op_type == "If"]
    body = next(a.g for a in node.attribute if a.name == branch)
    nodes = [n for n in graph.node if n is not node]
    nodes += list(body.node)
    nodes += [helper.make_node("Identity", [o.name], [target], name=f"out/{target}")
              for o, target in zip(body.output, node.output, strict=True)]
    del graph.node[:]
    graph.node.extend(nodes)
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, out / "model.onnx")
    shutil.copy(folder / "archc_export.json", out / "archc_export.json")
    return out


def bench_spec(name: str, args: argparse.Namespace) -> tuple:
    import torch

    from archc.backends.onnx.export import export_model
    from archc.backends.onnx.runtime import OnnxModel
    from archc.backends.torch import build

    path = ROOT / "specs" / f"{name}.arch"
    model = build(str(path), seed=0).eval()
    t0 = time.perf_counter()
    export_model(model, Path(args.out) / name, path.read_text(), name, "random init, seed 0", force=True)
    export_s = time.perf_counter() - t0
    export_model(model, Path(args.out) / f"{name}.onnx", path.read_text(), name, "random init, seed 0", force=True,
                 target="onnx")
    ort_model = OnnxModel(Path(args.out) / name, threads=args.threads)
    vocab = ort_model.vocab
    ids = torch.randint(0, vocab, (1, args.prefill), generator=torch.Generator().manual_seed(0))
    prompt = ids[:, :args.prompt]

    def torch_prefill():
        with torch.no_grad():
            model.step(ids, 0, model.init_state(1, args.prefill))

    def ort_prefill():
        ort_model.step(ids.numpy(), 0, ort_model.init_state(1, args.prefill))

    def torch_decode():
        with torch.no_grad():
            return decode_ms(model.step, prompt, model.init_state(1, args.prompt + args.tokens), args.tokens)

    def ort_decode():
        return decode_ms(ort_model.step, prompt.numpy(), ort_model.init_state(1, args.prompt + args.tokens),
                         args.tokens)

    tp, op = median_seconds(torch_prefill, args.repeats), median_seconds(ort_prefill, args.repeats)
    torch_decode()
    ort_decode()
    td = statistics.median(torch_decode() for _ in range(args.repeats))
    od = statistics.median(ort_decode() for _ in range(args.repeats))
    fused = ort_model
    ort_model = OnnxModel(Path(args.out) / f"{name}.onnx", threads=args.threads)  # --target onnx
    ort_decode()
    std_p = median_seconds(ort_prefill, args.repeats)
    std_d = statistics.median(ort_decode() for _ in range(args.repeats))
    # the two-graph alternative: the prefill branch and the decode branch as graphs of their own
    folder = Path(args.out) / f"{name}.onnx"
    op2, od2 = float("nan"), float("nan")
    if args.two_graphs and fused.manifest.state:
        ort_model = OnnxModel(_one_branch(folder, Path(args.out) / f"{name}.prefill", "then_branch"),
                              threads=args.threads)
        op2 = median_seconds(ort_prefill, args.repeats)
        ort_model = OnnxModel(_one_branch(folder, Path(args.out) / f"{name}.step", "else_branch"),
                              threads=args.threads)
        # the step graph cannot prefill: the prompt goes through the prefill graph
        prefill_model = OnnxModel(Path(args.out) / f"{name}.prefill", threads=args.threads)

        def ort_decode_two_graphs():
            return decode_ms(ort_model.step, prompt.numpy(), prefill_model.init_state(1, args.prompt + args.tokens),
                             args.tokens, prefill=prefill_model.step)

        ort_decode_two_graphs()
        od2 = statistics.median(ort_decode_two_graphs() for _ in range(args.repeats))
    row = (name, export_s, tp * 1e3, op * 1e3, op / tp, td * 1e3, od * 1e3, od / td, std_p * 1e3, std_d * 1e3,
           op / std_p, od / std_d)
    print(f"{name:<14} export {export_s:6.1f} s | prefill 1×{args.prefill}: torch {tp * 1e3:7.1f} ms, "
          f"ort {op * 1e3:7.1f} ms ({op / tp:.2f}×) | decode: torch {td * 1e3:5.2f} ms, ort {od * 1e3:5.2f} ms "
          f"({od / td:.2f}×) | --target onnx: prefill {std_p * 1e3:7.1f} ms, decode {std_d * 1e3:5.2f} ms "
          f"(ort ÷ onnx {op / std_p:.2f}× / {od / std_d:.2f}×)", flush=True)
    if args.two_graphs:
        print(f"{'':<14} two graphs: prefill {op2 * 1e3:7.1f} ms, decode {od2 * 1e3:5.2f} ms", flush=True)
    for scheme in filter(None, args.quantize.split(",")):  # quantized --target ort beside its fp32 graph
        from archc.backends.onnx.precision import QuantizeOptions

        export_model(model, Path(args.out) / f"{name}.{scheme}", path.read_text(), name, "random init, seed 0",
                     force=True, quantize=QuantizeOptions(scheme=scheme))
        ort_model = OnnxModel(Path(args.out) / f"{name}.{scheme}", threads=args.threads)
        ort_decode()
        qd = statistics.median(ort_decode() for _ in range(args.repeats))
        ort_model = fused
        fd = statistics.median(ort_decode() for _ in range(args.repeats))
        print(f"{'':<14} {scheme}: decode {qd * 1e3:5.2f} ms, fp32 {fd * 1e3:5.2f} ms: {fd / qd:.2f}× faster",
              flush=True)
        row = (*row, scheme, qd * 1e3, fd * 1e3)
    return row


def _schemes(text: str) -> str:
    """--quantize: comma-separated schemes that need no calibration data, checked at parse time."""
    bad = [s for s in filter(None, text.split(",")) if s not in ("int8_dynamic", "int8_block", "int4")]
    if bad:
        raise argparse.ArgumentTypeError(f"{', '.join(bad)}: not int8_dynamic, int8_block or int4")
    return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--specs", default=DEFAULT)
    ap.add_argument("--out", default="/tmp/archc-bench")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--quantize", default="", type=_schemes,
                    help="schemes to time beside fp32 (int8_dynamic,int8_block,int4: no calibration data)")
    ap.add_argument("--two-graphs", action="store_true", help="also time a traced decoder's If branches as two graphs")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    import torch

    torch.set_num_threads(args.threads)
    rows = [bench_spec(name, args) for name in args.specs.split(",")]
    print("\n| spec | export s | prefill torch ms | prefill ort ms | ort ÷ torch | decode torch ms | decode ort ms "
          "| ort ÷ torch | --target onnx: prefill ms | decode ms | ort ÷ onnx: prefill | decode |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.1f} | {r[2]:.1f} | {r[3]:.1f} | {r[4]:.2f} | {r[5]:.2f} | {r[6]:.2f} | {r[7]:.2f} "
              f"| {r[8]:.1f} | {r[9]:.2f} | {r[10]:.2f} | {r[11]:.2f} |")


if __name__ == "__main__":
    main()
