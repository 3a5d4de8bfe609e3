"""archc's torch backend against transformers, side by side in one process (same config, weights
and threads, fp32, this machine's CPU).

    .venv/bin/python tools/bench_torch.py [--quick]

Measures, for llama-tiny vs `LlamaForCausalLM` and mixtral-tiny vs `MixtralForCausalLM`:
forward at batch 1 × 512, a training step (forward + backward + AdamW) at batch 4 × 256, and
per-token greedy decode after a 128-token prompt; plus archc's decode time per token at 128 vs
2048 tokens of context. Reports medians and the ratio archc / transformers (< 1: archc faster);
archc and transformers are timed alternately, so that the machine's drift hits both alike.
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    repeat = 3 if args.quick else 7
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}")
    print(f"{'model':<14}{'measurement':<34}{'archc':>10}{'HF':>10}{'ratio':>8}")
    for name, hf_fn in (("llama-tiny", _hf_llama), ("mixtral-tiny", _hf_mixtral)):
        model = archc.build(f"specs/{name}.arch", seed=0).eval()
        hf = hf_fn().eval()
        assert model.num_parameters() == hf.num_parameters(), (model.num_parameters(), hf.num_parameters())
        rows = [("forward 1×512 (s)", forward(model, hf, repeat)),
                ("train step 4×256 (s)", train_step(model, hf, repeat)),
                ("decode/token after 128 (ms)", tuple(1e3 * t for t in decode(model, hf, 128, 33, repeat)))]
        for what, (a, b) in rows:
            print(f"{name:<14}{what:<34}{a:>10.4f}{b:>10.4f}{a / b:>8.2f}")
        long = 1e3 * decode(model, hf, 2048, 17, max(3, repeat // 2), with_hf=False)[0]
        short = rows[2][1][0]
        print(f"{name:<14}{'archc decode/token 2048 vs 128 ctx':<34}{long:>10.3f}{short:>10.3f}{long / short:>8.2f}")


if __name__ == "__main__":
    main()
