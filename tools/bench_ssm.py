"""archc's linear-time mixers on this CPU: against transformers side by side, and how they scale.

    .venv/bin/python tools/bench_ssm.py [--quick] [--only hf|scaling|decode] [--models SPEC …]
                                        [--plot docs/scaling.png]

1. mamba-tiny vs `MambaForCausalLM` (its PyTorch path), forward at batch 1 × {512, 2048, 8192};
2. rwkv-tiny vs `RwkvForCausalLM` (its CPU kernel), forward at 1 × {512, 2048} and per-token
   greedy decode after a 128-token prompt;
3. forward time against the sequence length, 256 … 16384, for every linear-time mixer's spec
   (mamba, mamba2, retnet, rwkv, rwkv6, xlstm, s4-lm = S4D, s4-dplr-lm = S4, gated-deltanet) and llama-tiny
   (softmax attention, the quadratic reference), as a table and a log-log PNG, with
   time(16384) / time(1024) (16 for an exactly linear cost);
4. per-token decode (`step` of one token) at 128 and 8192 tokens of context, and the state size
   in bytes at both.

Same config and weights count on both sides, fp32, the same threads; archc and transformers are
timed alternately (medians), so drift in the machine's speed hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).parent))
from bench_torch import _paired, _per_token, _timed

import archc

LINEAR = ("mamba-tiny", "mamba2-tiny", "retnet-tiny", "rwkv-tiny", "rwkv6-tiny", "xlstm-tiny", "s4-lm", "s4-dplr-lm",
          "gated-deltanet-tiny", "gla-tiny")


def _hf_mamba():
    cfg = transformers.MambaConfig(vocab_size=4096, hidden_size=256, state_size=16, num_hidden_layers=4, expand=2,
                                   conv_kernel=4, time_step_rank=16, layer_norm_epsilon=1e-5, tie_word_embeddings=True)
    return transformers.MambaForCausalLM(cfg)


def _hf_rwkv():
    cfg = transformers.RwkvConfig(vocab_size=4096, hidden_size=256, num_hidden_layers=4, attention_hidden_size=256,
                                  intermediate_size=688, context_length=8192, tie_word_embeddings=True)
    return transformers.RwkvForCausalLM(cfg)


def _pair(name: str, hf_fn):
    model = archc.build(f"specs/{name}.arch", seed=0).eval()
    hf = hf_fn().eval()
    assert model.num_parameters() == hf.num_parameters(), (model.num_parameters(), hf.num_parameters())
    return model, hf


def _forward_pair(model, hf, t: int, repeat: int) -> tuple[float, float]:
    ids = torch.randint(0, 4096, (1, t))
    with torch.no_grad():
        return _paired(lambda: _timed(lambda: model(ids)), lambda: _timed(lambda: hf(ids)), repeat, warmup=1)


def against_transformers(repeat: int) -> None:
    print(f"{'model':<12}{'measurement':<30}{'archc':>10}{'HF':>10}{'HF/archc':>10}")
    model, hf = _pair("mamba-tiny", _hf_mamba)
    for t in (512, 2048, 8192):
        a, b = _forward_pair(model, hf, t, repeat if t < 8192 else max(2, repeat // 3))
        print(f"{'mamba-tiny':<12}{f'forward 1×{t} (s)':<30}{a:>10.4f}{b:>10.4f}{b / a:>10.2f}")
    model, hf = _pair("rwkv-tiny", _hf_rwkv)
    for t in (512, 2048):
        a, b = _forward_pair(model, hf, t, repeat)
        print(f"{'rwkv-tiny':<12}{f'forward 1×{t} (s)':<30}{a:>10.4f}{b:>10.4f}{b / a:>10.2f}")
    ids = torch.randint(0, 4096, (1, 128))
    kw = dict(do_sample=False, pad_token_id=0)
    with torch.no_grad():
        a, b = _paired(lambda: _per_token(lambda n: model.generate(ids, max_new_tokens=n), 33),
                       lambda: _per_token(lambda n: hf.generate(ids, max_new_tokens=n, min_new_tokens=n, **kw), 33),
                       repeat, warmup=1)
    print(f"{'rwkv-tiny':<12}{'decode/token after 128 (ms)':<30}{1e3 * a:>10.3f}{1e3 * b:>10.3f}{b / a:>10.2f}")


def scaling(repeat: int, lengths: list[int], plot: str | None, models: tuple[str, ...] = LINEAR) -> None:
    names = (*models, "llama-tiny")
    times: dict[str, list[float]] = {}
    for name in names:
        model = archc.build(f"specs/{name}.arch", seed=0).eval()
        row = []
        for t in lengths:
            ids = torch.randint(0, 4096, (1, t))
            def run(model=model, ids=ids) -> float:
                with torch.no_grad():
                    return _timed(lambda: model(ids))

            run()
            row.append(statistics.median(run() for _ in range(repeat if t <= 4096 else 2)))
        times[name] = row
    w = max(13, *(len(n) + 2 for n in names))
    print(f"\nforward time (s) at batch 1\n{'T':>7}" + "".join(f"{n:>{w}}" for n in names))
    for i, t in enumerate(lengths):
        print(f"{t:>7}" + "".join(f"{times[n][i]:>{w}.4f}" for n in names))
    if 1024 in lengths and 16384 in lengths:
        a, b = lengths.index(1024), lengths.index(16384)
        print(f"{'16k/1k':>7}" + "".join(f"{times[n][b] / times[n][a]:>{w}.1f}" for n in names))
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for n in names:
            ax.loglog(lengths, times[n], marker="o", label=n)
        ax.loglog(lengths, [times[names[0]][0] * t / lengths[0] for t in lengths], "k:", label="linear")
        ax.set_xlabel("sequence length")
        ax.set_ylabel("forward time, batch 1 (s)")
        ax.set_title("archc forward on a 2-core CPU (fp32)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plot, dpi=120)
        print(f"plot: {plot}")


def decode_vs_context(repeat: int, contexts: tuple[int, int], models: tuple[str, ...] = LINEAR) -> None:
    """`step` of one token after each context, the two contexts timed alternately."""
    print(f"\n{'model':<20}{'decode ms/token':>16}" + "".join(f"{f'@{c}':>10}" for c in contexts)
          + f"{'ratio':>8}{'state bytes':>14}{'same size':>11}")
    for name in (*models, "llama-tiny"):
        model = archc.build(f"specs/{name}.arch", seed=0).eval()
        timers, sizes = [], []
        tok = torch.randint(0, 4096, (1, 1))
        for c in contexts:
            state = model.init_state(1, c + 64)
            with torch.no_grad():
                _, state = model.step(torch.randint(0, 4096, (1, c)), 0, state)

            def one(state=state, c=c) -> float:
                with torch.no_grad():
                    return _timed(lambda: model.step(tok, c, state))  # noqa: B023 (model: this iteration's)

            timers.append(one)
            sizes.append(sum(s.numel() * s.element_size() for s in state))
        a, b = _paired(timers[0], timers[1], 20 * repeat, warmup=5)
        print(f"{name:<20}{'':>16}{1e3 * a:>10.3f}{1e3 * b:>10.3f}{b / a:>8.2f}{sizes[1]:>14,}{sizes[0] == sizes[1]!s:>11}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repeats, lengths up to 4096")
    ap.add_argument("--plot", default=None, help="write the scaling plot (PNG) here")
    ap.add_argument("--only", choices=("hf", "scaling", "decode"), default=None)
    ap.add_argument("--models", nargs="+", default=None, help="scaling/decode: only these specs (and llama-tiny)")
    args = ap.parse_args()
    repeat = 3 if args.quick else 5
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}")
    if args.only in (None, "hf"):
        against_transformers(repeat)
    if args.only in (None, "scaling"):
        lengths = [256, 512, 1024, 2048, 4096] if args.quick else [256, 512, 1024, 2048, 4096, 8192, 16384]
        scaling(repeat, lengths, args.plot, tuple(args.models or LINEAR))
    if args.only in (None, "decode"):
        decode_vs_context(repeat, (128, 2048) if args.quick else (128, 8192), tuple(args.models or LINEAR))


if __name__ == "__main__":
    main()
