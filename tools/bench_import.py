"""`archc import-hf` of a 0.5B checkpoint against reading its safetensors once (issue #23's speed
target: ≤ 1.5× the time, peak memory ≤ 1.3× one copy of the weights).

A checkpoint of Qwen2-0.5B's shape (random bf16 weights, as Qwen2 publishes them; sharded at
~500 MB with `model.safetensors.index.json`, as `save_pretrained` shards) is written once under
`--out`; then, each in a fresh process and after one warm-up read so both find the files in the
page cache: reading every byte of every shard once (the peer), and `archc.import_hf(folder,
spec, weights)` into a folder where no earlier import's output is left (deleting a 1 GB file
on this machine's disk, mounted with `discard`, takes 0.2 s: not the import's work), after an
`os.sync()` so no earlier run's writeback competes. The import's time includes its durability:
the fsync of the transactional write (archc starts the writeback while it copies). Peak memory
is the process's peak anonymous resident memory (sampled every 2 ms: what it holds, not the
page cache its reads map) above its own after its imports (torch, archc), against the weights'
size.

    .venv/bin/python tools/bench_import.py [--out /tmp/archc-import-bench]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.results import ROOT, load_results, publish, record

START, END = "<!-- import speed table: tools/bench_import.py -->", "<!-- end of import speed table -->"

QWEN2_05B = {"vocab_size": 151936, "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
             "num_key_value_heads": 2, "intermediate_size": 4864, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
             "tie_word_embeddings": True, "use_sliding_window": False, "max_window_layers": 24}

CHILD = r"""
import json, os, sys, threading, time
from pathlib import Path
import torch, safetensors.torch, archc, archc.hf
def anon_kb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
base, peak, done = anon_kb(), [0], threading.Event()
def watch():
    while not done.is_set():
        peak[0] = max(peak[0], anon_kb())
        time.sleep(0.002)
threading.Thread(target=watch, daemon=True).start()
folder, mode, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
for old in (out / "q.arch", out / "q.safetensors"):  # a first import: deleting an old one is not its work
    old.unlink(missing_ok=True)
os.sync()  # and no earlier run's writeback still going
t0 = time.perf_counter()
if mode != "read":  # the modules import-hf loads on first use (the spec checker: lark, pydantic), timed apart
    import archc.hf.importer, archc.frontend
modules_s = time.perf_counter() - t0
t0 = time.perf_counter()
if mode == "read":  # every byte of every shard, once
    n = sum(len(p.read_bytes()) for p in sorted(folder.glob("*.safetensors")))
else:
    archc.import_hf(str(folder), str(out / "q.arch"), str(out / "q.safetensors"), force=True)
seconds = time.perf_counter() - t0
done.set()
time.sleep(0.01)
print(json.dumps({"seconds": seconds, "modules_s": modules_s,
                  "peak_above_base_mb": (max(peak[0], anon_kb()) - base) / 1024}))
"""


def make_checkpoint(folder: Path, shard_bytes: int = 500 << 20) -> int:
    """A random bf16 checkpoint of Qwen2-0.5B's names and shapes, sharded; returns its bytes."""
    import torch
    import transformers
    from safetensors.torch import save_file

    cfg = transformers.Qwen2Config(**QWEN2_05B)
    folder.mkdir(parents=True, exist_ok=True)
    cfg.save_pretrained(folder)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in transformers.Qwen2ForCausalLM(cfg).state_dict().items()
                  if k != "lm_head.weight"}
    shards, current, size, total = [], {}, 0, 0
    gen = torch.Generator().manual_seed(0)
    for name, shape in shapes.items():
        current[name] = (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16)
        size += current[name].numel() * 2
        if size >= shard_bytes:
            shards.append(current)
            total += size
            current, size = {}, 0
    shards.append(current)
    total += size
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                     "weight_map": weight_map}))
    return total


def run(folder: Path, mode: str, out: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(folder), mode, str(out)], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/archc-import-bench")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    root = Path(args.out)
    folder = root / "qwen2-0.5b"
    size = make_checkpoint(folder) if not (folder / "config.json").exists() else \
        sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    (root / "archc").mkdir(exist_ok=True)
    run(folder, "read", root / "archc")  # warm the page cache
    reads = [run(folder, "read", root / "archc") for _ in range(args.repeats)]
    imports = [run(folder, "import", root / "archc") for _ in range(args.repeats)]
    read_s = sorted(r["seconds"] for r in reads)[len(reads) // 2]
    import_s = sorted(r["seconds"] for r in imports)[len(imports) // 2]
    modules_s = sorted(r["modules_s"] for r in imports)[len(imports) // 2]
    peak = max(r["peak_above_base_mb"] for r in imports)
    weights_mb = size / 2**20
    row = {"checkpoint": "Qwen2-0.5B shape, bf16, sharded", "weights_mb": round(weights_mb, 1),
           "read_s": round(read_s, 3), "import_s": round(import_s, 3), "time_ratio": round(import_s / read_s, 2),
           "read_peak_mb": round(max(r["peak_above_base_mb"] for r in reads), 1), "import_peak_mb": round(peak, 1),
           "memory_ratio": round(peak / weights_mb, 2), "modules_s": round(modules_s, 3),
           "read_range": [round(min(r["seconds"] for r in reads), 3), round(max(r["seconds"] for r in reads), 3)],
           "import_range": [round(min(r["seconds"] for r in imports), 3),
                            round(max(r["seconds"] for r in imports), 3)]}
    path = ROOT / "docs" / "hf_import_results.json"
    results = load_results(path)
    record(path, results, row["checkpoint"], row)
    publish(path, ROOT / "docs" / "hf.md", START, END, table(results))


def table(results: dict) -> str:
    rows = ["| checkpoint | weights MB | read once s (range) | import s (range) | ÷ read (target ≤ 1.5) | "
            "+ first-use modules s | read peak MB | import peak MB | ÷ weights (target ≤ 1.3) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results.values():
        spread = {k: "–".join(map(str, r.get(f"{k}_range", []))) for k in ("read", "import")}
        rows.append(f"| {r['checkpoint']} | {r['weights_mb']:,} | {r['read_s']} ({spread['read']}) | "
                    f"{r['import_s']} ({spread['import']}) | {r['time_ratio']} | {r.get('modules_s', '—')} | "
                    f"{r['read_peak_mb']:,} | {r['import_peak_mb']:,} | {r['memory_ratio']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
