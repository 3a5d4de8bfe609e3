"""archc's ONNX decoders against onnxruntime-genai's model builder, side by side in one script.

    .venv/bin/python tools/bench_genai.py [--quick] [--configs llama,mistral,qwen2] [--out /tmp/archc-genai]

For each configuration (llama-tiny's widths: d 256, 4 layers, 8 heads, 2 kv heads, ffn 688,
vocab 4,096; Mistral-style with a sliding window; Qwen2-style with q/k/v biases) a transformers
model is random-initialized from its config, saved with `save_pretrained` and a WordLevel
`tokenizer.json` of 4,096 tokens (the `tokenizers` library), and given to
`python -m onnxruntime_genai.models.builder -i DIR -o OUT -p fp32|int4 -e cpu` (and once more with
`--extra_options prune_lm_head=true`). archc exports its own spec of the same widths, loaded with
the same weights, four ways: `--target ort` at `O2` (the default), the same with `--logits last`
(the head on the last position only: the peer of the builder's `prune_lm_head`), `--target onnx`
at `O2`, and `--target onnx --pipeline O0` (the graph before issue #22's fusions). Each graph runs in a plain onnxruntime session (2 intra-op threads, CPU),
with the same feeds: prefill = one run over 512 tokens from an empty cache; decode = ms per token
over 32 one-token steps after a 128-token prompt; medians of `--repeat` runs, the graphs timed
alternately. Also: the node count (subgraphs included) and, fp32, the max |archc − builder| of
the logits. Results go to docs/performance_results.json and the table of docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.results import load_results, publish, save_results  # noqa: E402

D, LAYERS, HEADS, KV, FFN, VOCAB = 256, 4, 8, 2, 688, 4096
WINDOW = 128

SPEC = """
model {name}(tokens) {{
  block decoder(x) {{
    x = x + attention(rmsnorm(x), heads={heads}, kv_heads={kv}, causal=true, pos=rope(theta={theta}){extra})
    return x + swiglu(rmsnorm(x), hidden={ffn})
  }}
  x = embed(tokens, {vocab}, {d})
  x = repeat({layers}, decoder)(x)
  return lm_head(rmsnorm(x), tied=true)
}}
"""

#: name -> (transformers config class, its extra settings, the spec's extra attention arguments, rope theta).
#: The builder's Mistral graph is asked for a full-length cache (`windowed_kv_cache=false`), so both
#: graphs take the same feeds; at `--target ort` archc's windowed cache is that full-length one too
#: (GroupQueryAttention's `local_window_size`), at `--target onnx` a ring buffer of the window (its
#: fixed size comes from the session's input shapes).
CONFIGS = {
    "llama": ("LlamaConfig", {}, "", 10000.0),
    "mistral": ("MistralConfig", {"sliding_window": WINDOW}, f", window={WINDOW}", 10000.0),
    "qwen2": ("Qwen2Config", {"use_sliding_window": False}, ", bias=true, out_bias=false", 1000000.0),
}


def hf_model(name: str):
    import torch
    import transformers

    cls, extra, _, theta = CONFIGS[name]
    cfg = getattr(transformers, cls)(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=LAYERS,
                                     num_attention_heads=HEADS, num_key_value_heads=KV, intermediate_size=FFN,
                                     tie_word_embeddings=True, rms_norm_eps=1e-6, max_position_embeddings=4096,
                                     rope_theta=theta, **extra)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(cfg).eval()


def save_hf(model, folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    model.save_pretrained(folder)
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "t0", "bos_token": "t1", "eos_token": "t2"}))


def archc_model(name: str, hf):
    """archc's spec of the configuration, built unfused with the transformers model's weights."""
    import archc

    _, _, extra, theta = CONFIGS[name]
    text = SPEC.format(name=f"{name}_tiny", heads=HEADS, kv=KV, theta=theta, extra=extra, ffn=FFN, vocab=VOCAB, d=D,
                       layers=LAYERS)
    model = archc.build(archc.loads(text, f"{name}.arch").graph, seed=0, pipeline="O0").eval()
    sd = hf.state_dict()
    mapping = {"embed.weight": sd["model.embed_tokens.weight"], "norm.weight": sd["model.norm.weight"]}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        mapping[f"layers.{i}.norm.weight"] = sd[p + "input_layernorm.weight"]
        mapping[f"layers.{i}.norm_1.weight"] = sd[p + "post_attention_layernorm.weight"]
        for k in ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "q_proj.bias", "k_proj.bias",
                  "v_proj.bias"):
            if p + "self_attn." + k in sd:
                mapping[f"layers.{i}.attn.{k}"] = sd[p + "self_attn." + k]
        for w in ("gate", "up", "down"):
            mapping[f"layers.{i}.mlp.{w}_proj.weight"] = sd[p + f"mlp.{w}_proj.weight"]
    missing = set(model.state_dict()) - set(mapping)
    assert not missing, sorted(missing)[:5]
    model.load_state_dict(mapping, strict=False)
    return model, text


def node_count(path: Path) -> int:
    import onnx

    m = onnx.load(str(path), load_external_data=False)

    def count(g) -> int:
        return sum(1 + sum(count(a.g) for a in n.attribute if a.type == onnx.AttributeProto.GRAPH) for n in g.node)

    return count(m.graph)


def _max_abs(logits: np.ndarray, ref: np.ndarray) -> float:
    """max |logits − ref| over the positions `logits` holds (the last only, for a pruned head)."""
    return float(np.abs(logits - ref[:, -logits.shape[1]:]).max())


class Runner:
    """A plain onnxruntime session over a decoder with genai's interface (input_ids,
    attention_mask, past_key_values.N.key/value [batch, kv, past, head_dim])."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.past = [i.name for i in self.session.get_inputs() if i.name.startswith("past_key_values")]
        #: the empty cache [batch 1, kv heads, 0 tokens, head_dim]; a fixed length (a ring buffer) as it is
        empty = (1, KV, 0, D // HEADS)
        self.empty = [np.zeros([d if isinstance(d, int) else empty[k] for k, d in enumerate(i.shape)], np.float32)
                      for i in self.session.get_inputs() if i.name in self.past]
        self.outputs = ["logits"] + [n.replace("past_key_values", "present") for n in self.past]

    def run(self, ids: np.ndarray, cache: list[np.ndarray] | None, done: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
        """`ids` after `done` tokens whose state is `cache` (None: the empty cache, batch 1)."""
        feeds = {"input_ids": ids, "attention_mask": np.ones((ids.shape[0], done + ids.shape[1]), np.int64),
                 **dict(zip(self.past, self.empty if cache is None else cache, strict=True))}
        logits, *present = self.session.run(self.outputs, feeds)
        return logits, present

    def prefill_s(self, ids: np.ndarray) -> float:
        t0 = time.perf_counter()
        self.run(ids, None)
        return time.perf_counter() - t0

    def decode_ms(self, prompt: np.ndarray, steps: int) -> float:
        logits, cache = self.run(prompt, None)
        done = prompt.shape[1]
        t0 = time.perf_counter()
        for _ in range(steps):
            nxt = logits[:, -1:].argmax(-1).astype(np.int64)
            logits, cache = self.run(nxt, cache, done)
            done += 1
        return 1e3 * (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="llama,mistral,qwen2")
    ap.add_argument("--precisions", default="fp32,int4")
    ap.add_argument("--out", default="/tmp/archc-genai")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="3 repeats, 16 decode steps")
    ap.add_argument("--json", default="docs/performance_results.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import onnxruntime
    import onnxruntime_genai
    import torch

    from archc.backends.onnx.export import export_model
    from archc.backends.onnx.precision import QuantizeOptions

    torch.set_num_threads(args.threads)
    repeat, steps = (3, 16) if args.quick else (args.repeat, 32)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = ROOT / args.json
    results = load_results(results_path)
    rng = np.random.default_rng(0)
    prompt, long = rng.integers(3, VOCAB, (1, 128)), rng.integers(3, VOCAB, (1, 512))
    print(f"onnxruntime {onnxruntime.__version__}, onnxruntime-genai {onnxruntime_genai.__version__}, "
          f"{args.threads} threads", flush=True)
    for name in args.configs.split(","):
        hf = hf_model(name)
        hf_dir = out / f"{name}-hf"
        save_hf(hf, hf_dir)
        model, text = archc_model(name, hf)
        for precision in args.precisions.split(","):
            graphs: dict[str, Path] = {}
            export_s = {}
            # the builder as the issue runs it, and with its `prune_lm_head` (the head on the last
            # position only: what archc's `--logits last` does), so that each archc row has its peer
            for label, options in (("builder", []), ("builder prune_lm_head", ["prune_lm_head=true"])):
                builder_out = out / f"{name}-{precision}-{label.replace(' ', '-')}"
                t0 = time.perf_counter()
                options = options + (["windowed_kv_cache=false"] if name == "mistral" else [])
                extra = ["--extra_options", *options] if options else []
                subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir), "-o",
                                str(builder_out), "-p", precision, "-e", "cpu", *extra], check=True,
                               capture_output=True)
                export_s[label] = time.perf_counter() - t0
                graphs[label] = builder_out / "model.onnx"
            q = QuantizeOptions("int4" if precision == "int4" else "none")
            for label, target, level, logits in (("archc ort O2", "ort", "O2", "all"),
                                                 ("archc ort O2 --logits last", "ort", "O2", "last"),
                                                 ("archc onnx O2", "onnx", "O2", "all"),
                                                 ("archc onnx O0", "onnx", "O0", "all")):
                folder = out / f"{name}-{precision}-{target}-{level}-{logits}"
                t0 = time.perf_counter()
                export_model(model, folder, text, f"{name}_tiny", "transformers init, seed 0", force=True, quantize=q,
                             pipeline=level, target=target, keep_reference=False, logits=logits)
                export_s[label] = time.perf_counter() - t0
                graphs[label] = folder / "model.onnx"
            runners = {k: Runner(p, args.threads) for k, p in graphs.items()}
            ref_logits = runners["builder"].run(prompt, None)[0]
            prefill: dict[str, list[float]] = {k: [] for k in runners}
            decode: dict[str, list[float]] = {k: [] for k in runners}
            for r in runners.values():  # warm up
                r.prefill_s(long)
                r.decode_ms(prompt, 2)
            for _ in range(repeat):
                for k, r in runners.items():
                    prefill[k].append(r.prefill_s(long))
                    decode[k].append(r.decode_ms(prompt, steps))
            rows = {}
            for k, r in runners.items():
                rows[k] = {"nodes": node_count(graphs[k]), "export_s": round(export_s[k], 1),
                           "prefill_ms": round(1e3 * statistics.median(prefill[k]), 2),
                           "decode_ms": round(statistics.median(decode[k]), 3),
                           "max_abs_vs_builder": _max_abs(r.run(prompt, None)[0], ref_logits)}
            b = rows["builder"]
            for k, row in rows.items():
                row["prefill_ratio"] = round(row["prefill_ms"] / b["prefill_ms"], 3)
                row["decode_ratio"] = round(row["decode_ms"] / b["decode_ms"], 3)
                row["nodes_ratio"] = round(row["nodes"] / b["nodes"], 2)
                print(f"{name:<8}{precision:<6}{k:<15} nodes {row['nodes']:>5} ({row['nodes_ratio']:.2f}×)  "
                      f"prefill {row['prefill_ms']:8.2f} ms ({row['prefill_ratio']:.2f}×)  decode "
                      f"{row['decode_ms']:7.3f} ms ({row['decode_ratio']:.2f}×)  export {row['export_s']:5.1f} s  "
                      f"|Δ| {row['max_abs_vs_builder']:.1e}", flush=True)
            results[f"{name}/{precision}"] = rows
            save_results(results_path, results)
    publish(results_path, ROOT / "docs" / "performance.md", START, END, table(results))


START, END = "<!-- genai table: tools/bench_genai.py -->", "<!-- end of genai table -->"


def table(results: dict) -> str:
    head = ["config", "precision", "graph", "nodes", "prefill 1×512 ms", "decode ms/token", "÷ builder: nodes",
            "prefill", "decode", "export s", "max abs Δ logits vs builder"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for key in sorted(results):
        name, precision = key.split("/")
        for graph, r in results[key].items():
            lines.append("| " + " | ".join([name, precision, graph, f"{r['nodes']:,}", f"{r['prefill_ms']:.1f}",
                                            f"{r['decode_ms']:.3f}", f"{r['nodes_ratio']:.2f}",
                                            f"{r['prefill_ratio']:.2f}", f"{r['decode_ratio']:.2f}",
                                            f"{r['export_s']:.1f}", f"{r['max_abs_vs_builder']:.1e}"]) + " |")
    return "\n".join(lines)




if __name__ == "__main__":
    main()
