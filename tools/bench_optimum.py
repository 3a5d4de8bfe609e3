"""archc's ONNX export against Hugging Face optimum's, side by side in one process, on the configs
both can export (Llama and Mistral at the tiny size): export time, and onnxruntime prefill of
1×512 tokens and decode ms/token after a 128-token prompt (fp32, 2 threads, batch 1, random init).

optimum-onnx pins transformers 4.x while archc's test references use transformers 5, so this runs
in a virtual environment of its own:

    python3.11 -m venv /tmp/optvenv
    /tmp/optvenv/bin/pip install torch==2.13.0 "optimum-onnx[onnxruntime]" -e ".[torch,onnx]"
    /tmp/optvenv/bin/python tools/bench_optimum.py [--out /tmp/archc-optimum] [--repeats 5]

Both models are the same architecture at the same size (d 256, 4 layers, 8 heads, 2 kv heads,
SwiGLU 688, vocab 4096; Mistral with a 128-token sliding window), each randomly initialized; the
timed work is the same: one onnxruntime session per graph, numpy in and out, the KV cache fed
back each step. optimum's graph is transformers' own modules traced by torch.onnx.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from bench_onnx import decode_ms, median_seconds  # noqa: E402 — the timing both benchmarks share

LLAMA = (ROOT / "specs" / "llama-tiny.arch").read_text()
MISTRAL = """
model mistral_tiny(tokens) {
  block decoder(x) {
    x = x + attention(rmsnorm(x, eps=1e-5), heads=8, kv_heads=2, causal=true, window=128, pos=rope(theta=10000))
    return x + swiglu(rmsnorm(x, eps=1e-5), hidden=688)
  }
  x = embed(tokens, 4096, 256)
  x = repeat(4, decoder)(x)
  return lm_head(rmsnorm(x, eps=1e-5))
}
"""


def hf_config(kind: str):
    from transformers import LlamaConfig, MistralConfig

    common = dict(vocab_size=4096, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=2, intermediate_size=688, rope_theta=10000.0, max_position_embeddings=4096)
    if kind == "llama":
        return LlamaConfig(**common, tie_word_embeddings=True, rms_norm_eps=1e-6)
    return MistralConfig(**common, tie_word_embeddings=False, rms_norm_eps=1e-5, sliding_window=128)


class OptimumRunner:
    """optimum's decoder graph (`text-generation-with-past`): input_ids, attention_mask,
    position_ids and past_key_values.N.key/value in; logits and present.N.key/value out."""

    def __init__(self, folder: Path, threads: int) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(folder / "model.onnx"), so, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]
        self.past = [n for n in self.names if n.startswith("past_key_values")]

    def step(self, ids: np.ndarray, past: dict[str, np.ndarray] | None, start: int):
        b, t = ids.shape
        if past is None:
            past = {n: np.zeros((b, 2, 0, 32), np.float32) for n in self.past}
        feeds = {"input_ids": ids, "attention_mask": np.ones((b, start + t), np.int64), **past}
        if "position_ids" in self.names:
            feeds["position_ids"] = np.arange(start, start + t, dtype=np.int64)[None].repeat(b, 0)
        outs = self.session.run(None, feeds)
        names = [o.name for o in self.session.get_outputs()]
        new = {n.replace("present", "past_key_values"): v for n, v in zip(names[1:], outs[1:], strict=True)}
        return outs[0], new


def bench(kind: str, args: argparse.Namespace) -> list[str]:
    import torch
    from optimum.exporters.onnx import main_export
    from transformers import AutoModelForCausalLM

    import archc
    from archc.backends.onnx.export import export_model
    from archc.backends.onnx.runtime import OnnxModel
    from archc.backends.torch import build

    out = Path(args.out)
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(hf_config(kind)).eval()
    hf.save_pretrained(out / f"hf-{kind}")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main_export(str(out / f"hf-{kind}"), output=out / f"optimum-{kind}", task="text-generation-with-past",
                    no_post_process=False, device="cpu", do_validation=False)
    optimum_export = time.perf_counter() - t0

    spec = LLAMA if kind == "llama" else MISTRAL
    model = build(archc.loads(spec, f"{kind}.arch").graph, seed=0).eval()
    t0 = time.perf_counter()
    export_model(model, out / f"archc-{kind}", spec, kind, "random init, seed 0", force=True)
    archc_export = time.perf_counter() - t0

    gen = np.random.default_rng(0)
    ids = gen.integers(0, 4096, (1, args.prefill), dtype=np.int64)
    prompt = ids[:, :args.prompt]
    opt = OptimumRunner(out / f"optimum-{kind}", args.threads)
    arc = OnnxModel(out / f"archc-{kind}", threads=args.threads)

    opt_step = lambda x, start, st: opt.step(x, st, start)  # noqa: E731 — the shared (ids, start, state) order
    opt_prefill = median_seconds(lambda: opt.step(ids, None, 0), args.repeats)
    arc_prefill = median_seconds(lambda: arc.step(ids, 0, arc.init_state(1, args.prefill)), args.repeats)
    opt_decode = statistics.median(decode_ms(opt_step, prompt, None, args.tokens) for _ in range(args.repeats))
    arc_decode = statistics.median(decode_ms(arc.step, prompt, arc.init_state(1, args.prompt + args.tokens), args.tokens)
                                   for _ in range(args.repeats))
    rows = [f"| {kind}-tiny | archc | {archc_export:.1f} | {arc_prefill * 1e3:.1f} | {arc_decode * 1e3:.2f} |",
            f"| {kind}-tiny | optimum {_version()} | {optimum_export:.1f} | {opt_prefill * 1e3:.1f} | "
            f"{opt_decode * 1e3:.2f} |"]
    for r in rows:
        print(r, flush=True)
    return rows


def _version() -> str:
    from importlib.metadata import version

    return version("optimum-onnx")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/archc-optimum")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=32)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(args.threads)
    rows = [r for kind in ("llama", "mistral") for r in bench(kind, args)]
    print("\n| config | exporter | export s | ort prefill 1×512 ms | ort decode ms/token |")
    print("| --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
