"""archc's torch backend against transformers, side by side in one process (same config, weights
and threads, fp32, this machine's CPU).

    .venv/bin/python tools/bench_torch.py [--quick]

Measures, for llama-tiny vs `LlamaForCausalLM` and mixtral-tiny vs `MixtralForCausalLM`:
forward at batch 1 × 512, a training step (forward + backward + AdamW) at batch 4 × 256, and
per-token greedy decode after a 128-token prompt; plus archc's decode time per token at 128 vs
2048 tokens of context. Reports medians and the ratio archc / transformers (< 1: archc faster).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import transformers

import archc


def _median_time(fn, repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


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
        a = _median_time(lambda: model(ids), repeat)
        b = _median_time(lambda: hf(ids), repeat)
    return a, b


def train_step(model, hf, repeat):
    ids = torch.randint(0, 4096, (4, 256))
    res = []
    for m in (model, hf):
        m.train()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4)

        def step(m=m, opt=opt):
            opt.zero_grad(set_to_none=True)
            m(ids, labels=ids).loss.backward()
            opt.step()

        res.append(_median_time(step, repeat))
        m.eval()
    return res[0], res[1]


def decode(model, hf, prompt_len: int, new: int, with_hf: bool = True):
    ids = torch.randint(0, 4096, (1, prompt_len))
    with torch.no_grad():
        model.generate(ids, max_new_tokens=4)
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=new)
        t_full = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=1)
        ours = (t_full - (time.perf_counter() - t0)) / (new - 1)
        if not with_hf:
            return ours, float("nan")
        kw = dict(do_sample=False, pad_token_id=0)
        hf.generate(ids, max_new_tokens=4, min_new_tokens=4, **kw)
        t0 = time.perf_counter()
        hf.generate(ids, max_new_tokens=new, min_new_tokens=new, **kw)
        t_full = time.perf_counter() - t0
        t0 = time.perf_counter()
        hf.generate(ids, max_new_tokens=1, **kw)
        theirs = (t_full - (time.perf_counter() - t0)) / (new - 1)
    return ours, theirs


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
                ("decode/token after 128 (ms)", tuple(1e3 * t for t in decode(model, hf, 128, 33)))]
        for what, (a, b) in rows:
            print(f"{name:<14}{what:<34}{a:>10.4f}{b:>10.4f}{a / b:>8.2f}")
        long = 1e3 * decode(model, hf, 2048, 17, with_hf=False)[0]
        short = rows[2][1][0]
        print(f"{name:<14}{'archc decode/token 2048 vs 128 ctx':<34}{long:>10.3f}{short:>10.3f}{long / short:>8.2f}")


if __name__ == "__main__":
    main()
