"""archc's torch backend against transformers, side by side in one process (same config, weights
and threads, fp32, this machine's CPU).

    .venv/bin/python tools/bench_torch.py [--quick] [--levels]

Measures, for llama-tiny vs `LlamaForCausalLM` and mixtral-tiny vs `MixtralForCausalLM`, at the
`O0` and `O1` pipelines: forward at batch 1 × 512, a training step (forward + backward + AdamW)
at batch 4 × 256, and per-token greedy decode after a 128-token prompt; plus archc's decode time
per token at 128 vs 2048 tokens of context. Reports medians and the ratio archc / transformers
(< 1: archc faster); archc and transformers are timed alternately, so that the machine's drift
hits both alike. `--levels` instead times every small single-input spec's `O1` build against its
`O0` build the same way (forward 1 × 256, a training step 2 × 128): no spec should be slower
fused.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import transformers

import archc


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _paired(fa, fb, repeat: int, warmup: int = 2) -> tuple[float, float]:
    """Medians of fa's and fb's times, measured alternately (a, b, a, b, …) so that drift in the
    machine's speed (other load, frequency scaling) hits both sides alike."""
    for _ in range(warmup):
        fa()
        fb()
    ta, tb = [], []
    for _ in range(repeat):
        ta.append(fa())
        tb.append(fb())
    return statistics.median(ta), statistics.median(tb)


def _hf_llama():
    cfg = transformers.LlamaConfig(vocab_size=4096, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
                                   num_key_value_heads=2, intermediate_size=688, tie_word_embeddings=True,
                                   rms_norm_eps=1e-6, max_position_embeddings=4096)
    return transformers.LlamaForCausalLM(cfg)


def _hf_mixtral():
    cfg = transformers.MixtralConfig(vocab_size=4096, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
                                     num_key_value_heads=2, intermediate_size=688, num_local_experts=4,
                                     num_experts_per_tok=2, tie_word_embeddings=True, rms_norm_eps=1e-6,
                                     max_position_embeddings=4096, rope_theta=1e6)
    return transformers.MixtralForCausalLM(cfg)


def forward(model, hf, repeat):
    ids = torch.randint(0, 4096, (1, 512))
    with torch.no_grad():
        return _paired(lambda: _timed(lambda: model(ids)), lambda: _timed(lambda: hf(ids)), repeat)


def train_step(model, hf, repeat):
    ids = torch.randint(0, 4096, (4, 256))
    steps = []
    for m in (model, hf):
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4)

        def step(m=m, opt=opt):
            m.train()
            opt.zero_grad(set_to_none=True)
            t = _timed(lambda: m(ids, labels=ids).loss.backward() or opt.step())
            m.eval()
            return t

        steps.append(step)
    return _paired(steps[0], steps[1], repeat)


def _per_token(gen, new: int) -> float:
    """Seconds per generated token after the prompt: (time for `new` tokens − time for 1) / (new − 1)."""
    return (_timed(lambda: gen(new)) - _timed(lambda: gen(1))) / (new - 1)


def decode(model, hf, prompt_len: int, new: int, repeat: int, with_hf: bool = True):
    ids = torch.randint(0, 4096, (1, prompt_len))
    kw = dict(do_sample=False, pad_token_id=0)
    ours = lambda: _per_token(lambda n: model.generate(ids, max_new_tokens=n), new)  # noqa: E731
    theirs = lambda: _per_token(lambda n: hf.generate(ids, max_new_tokens=n, min_new_tokens=n, **kw), new)  # noqa: E731
    with torch.no_grad():
        if not with_hf:
            return _paired(ours, lambda: 0.0, repeat, warmup=1)[0], float("nan")
        return _paired(ours, theirs, repeat, warmup=1)


def levels(repeat: int, only: str | None = None) -> None:
    """Every small single-input spec's O1 build against its O0 build, paired."""
    from pathlib import Path

    print(f"{'spec':<26}{'measurement':<24}{'O1':>10}{'O0':>10}{'O1/O0':>8}")
    for path in sorted(Path("specs").glob("*.arch")):
        if only and path.stem not in only.split(","):
            continue
        graph = archc.load(str(path)).graph
        if len(graph.inputs) != 1 or archc.summary(str(path)).total.params > 20_000_000:
            continue
        base = archc.build(graph, seed=0, pipeline="O0").eval()
        fused = archc.build(graph, seed=0, pipeline="O1").eval()
        vocab = min(int(n.params["vocab"]) for n in graph.nodes.values() if "vocab" in n.params)
        ids = torch.randint(0, vocab, (1, 256))
        with torch.no_grad():
            fwd = _paired(lambda m=fused, x=ids: _timed(lambda: m(x)), lambda m=base, x=ids: _timed(lambda: m(x)),
                          repeat)
        batch = torch.randint(0, vocab, (2, 128))
        steps = []
        for m in (fused, base):
            opt = torch.optim.AdamW(m.parameters(), lr=1e-4)

            def step(m=m, opt=opt, x=batch):
                opt.zero_grad(set_to_none=True)
                return _timed(lambda: m(x).logits.float().pow(2).mean().backward() or opt.step())

            steps.append(step)
        train = _paired(steps[0], steps[1], repeat)
        for what, (a, b) in (("forward 1×256 (s)", fwd), ("train step 2×128 (s)", train)):
            print(f"{path.stem:<26}{what:<24}{a:>10.4f}{b:>10.4f}{a / b:>8.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--levels", action="store_true", help="O1 against O0 for every small spec")
    ap.add_argument("--only", help="with --levels: these specs (comma-separated)")
    args = ap.parse_args()
    repeat = 3 if args.quick else 7
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}")
    if args.levels:
        levels(repeat, args.only)
        return
    print(f"{'model':<20}{'measurement':<34}{'archc':>10}{'HF':>10}{'ratio':>8}")
    for name, hf_fn in (("llama-tiny", _hf_llama), ("mixtral-tiny", _hf_mixtral)):
        hf = hf_fn().eval()
        for level in ("O0", "O1"):
            model = archc.build(f"specs/{name}.arch", seed=0, pipeline=level).eval()
            assert model.num_parameters() == hf.num_parameters(), (model.num_parameters(), hf.num_parameters())
            label = f"{name} {level}"
            rows = [("forward 1×512 (s)", forward(model, hf, repeat)),
                    ("train step 4×256 (s)", train_step(model, hf, repeat)),
                    ("decode/token after 128 (ms)", tuple(1e3 * t for t in decode(model, hf, 128, 33, repeat)))]
            for what, (a, b) in rows:
                print(f"{label:<20}{what:<34}{a:>10.4f}{b:>10.4f}{a / b:>8.2f}", flush=True)
            long = 1e3 * decode(model, hf, 2048, 17, max(3, repeat // 2), with_hf=False)[0]
            short = rows[2][1][0]
            print(f"{label:<20}{'archc decode/token 2048 vs 128 ctx':<34}{long:>10.3f}{short:>10.3f}{long / short:>8.2f}")


if __name__ == "__main__":
    main()
