"""Decode and prefill of export folders timed side by side in one process, alternating, with
archc's onnxruntime runtime (`OnnxModel`): the before/after comparison of one spec's graphs
(Mamba's traced step against its lowered one in docs/performance.md), where a machine's drift
between two separate runs is larger than the difference.

    .venv/bin/python tools/bench_decode_pair.py OLD_FOLDER NEW_FOLDER [...] [--rounds 16] [--steps 64]

Per round every folder decodes `--steps` greedy tokens after a `--prompt`-token prompt (ms per
token), in forward then reverse order on alternate rounds; prefill is one run over `--prefill`
tokens in the first four rounds. Prints the median and minimum of each.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from archc.backends.onnx.runtime import OnnxModel


def decode_ms(model: OnnxModel, prompt: np.ndarray, steps: int) -> float:
    logits, state = model.step(prompt, 0, model.init_state(1, prompt.shape[1] + steps))
    pos = prompt.shape[1]
    t0 = time.perf_counter()
    for _ in range(steps):
        logits, state = model.step(logits[:, -1:].argmax(-1), pos, state)
        pos += 1
    return 1e3 * (time.perf_counter() - t0) / steps


def prefill_ms(model: OnnxModel, ids: np.ndarray) -> float:
    t0 = time.perf_counter()
    model.step(ids, 0, model.init_state(1, ids.shape[1]))
    return 1e3 * (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    models = {f: OnnxModel(f, threads=args.threads) for f in args.folders}
    rng = np.random.default_rng(0)
    vocab = min(m.vocab for m in models.values())
    prompt, long = rng.integers(0, vocab, (1, args.prompt)), rng.integers(0, vocab, (1, args.prefill))
    decode: dict[str, list[float]] = {f: [] for f in models}
    prefill: dict[str, list[float]] = {f: [] for f in models}
    for r in range(args.rounds):
        for f in args.folders if r % 2 == 0 else args.folders[::-1]:
            decode[f].append(decode_ms(models[f], prompt, args.steps))
            if r < 4:
                prefill[f].append(prefill_ms(models[f], long))
    for f in args.folders:
        print(f"{f}: decode median {statistics.median(decode[f]):.3f} ms/token (min {min(decode[f]):.3f}), "
              f"prefill 1×{args.prefill} median {statistics.median(prefill[f]):.1f} ms")


if __name__ == "__main__":
    main()
