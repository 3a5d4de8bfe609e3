"""Tokenizing and packing 100 MB of text (issue #23's target: ≤ 60 s on this 2-core machine), and
reading it back from the cache, against the `tokenizers` library encoding the same documents
alone (the floor: what archc adds is reading, counting bytes, packing and caching).

The corpus: the Python standard library's own sources (every `*.py`, one document per file, ~31
MB), written round after round into `.jsonl` shards until 100 MB — real text, though repeated
~3× (the BPE's word cache then hits on the repeats as it would on any Zipfian corpus). The
tokenizer: a byte-level BPE of 32,768 tokens (GPT-2's pre-tokenizer) trained in-process on the
first 8 MB (not timed). Each measurement runs in a fresh process.

    .venv/bin/python tools/bench_data.py [--mb 100] [--out /tmp/archc-data-bench]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.results import ROOT, load_results, publish, record

START, END = "<!-- data speed table: tools/bench_data.py -->", "<!-- end of data speed table -->"

CHILD = r"""
import json, sys, time
from pathlib import Path
mode, data, tok_path = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
t0 = time.perf_counter()
if mode == "library":  # the peer: the library encodes the documents, nothing else
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(tok_path)
    texts = [json.loads(line)["text"] for f in sorted(data.glob("*.jsonl")) for line in f.open()]
    t1 = time.perf_counter()
    n = 0
    for i in range(0, len(texts), 256):
        n += sum(len(e.ids) for e in tok.encode_batch_fast(texts[i:i + 256], add_special_tokens=False))
    out = {"tokens": n, "read_s": t1 - t0}
else:
    from archc.data.corpus import load_corpus
    from archc.data.tokenizer import load_tokenizer
    c = load_corpus(data, load_tokenizer(tok_path))
    out = {"tokens": c.n_tokens - len(c.doc_ends), "cached": c.cached, "bytes": c.n_bytes}
out["seconds"] = time.perf_counter() - t0
print(json.dumps(out))
"""


def make_corpus(folder: Path, mb: int) -> tuple[int, int]:
    """`mb` MB of standard-library sources as .jsonl shards of ~25 MB; (bytes, documents)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(f for f in root.rglob("*.py") if "site-packages" not in f.parts)
    folder.mkdir(parents=True, exist_ok=True)
    total = docs = shard = 0
    out = None
    while total < mb * 10**6:
        for f in files:
            if out is None or out.tell() > 25 * 10**6:
                if out is not None:
                    out.close()
                out = (folder / f"shard-{shard:03d}.jsonl").open("w")
                shard += 1
            text = f.read_text(errors="replace")
            out.write(json.dumps({"text": text}) + "\n")
            total += len(text.encode())
            docs += 1
            if total >= mb * 10**6:
                break
    assert out is not None
    out.close()
    return total, docs


def train_tokenizer(folder: Path, path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts, size = [], 0
    with (folder / "shard-000.jsonl").open() as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            size += len(texts[-1])
            if size > 8 * 10**6:
                break
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=32768, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    tok.save(str(path))


def child(mode: str, data: Path, tok: Path) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, mode, str(data), str(tok)], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--out", type=Path, default=Path("/tmp/archc-data-bench"))
    ap.add_argument("--results", type=Path, default=ROOT / "docs" / "data_results.json")
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    data, tok = args.out / "corpus", args.out / "tokenizer.json"
    nbytes, docs = make_corpus(data, args.mb)
    train_tokenizer(data, tok)
    peer = child("library", data, tok)
    cold = child("archc", data, tok)
    warm = child("archc", data, tok)
    assert cold["tokens"] == peer["tokens"] == warm["tokens"] and not cold["cached"] and warm["cached"]
    row = {"mb": round(nbytes / 1e6, 1), "documents": docs, "tokens": cold["tokens"], "cold_s": round(cold["seconds"], 2),
           "warm_s": round(warm["seconds"], 3), "library_s": round(peer["seconds"], 2),
           "library_read_s": round(peer["read_s"], 2), "ratio": round(cold["seconds"] / peer["seconds"], 2),
           "mb_per_s": round(nbytes / 1e6 / cold["seconds"], 2), "target_s": 60, "met": cold["seconds"] <= 60}
    results = load_results(args.results)
    record(args.results, results, "stdlib-100mb-bpe32k", row)
    table = "\n".join([
        "| text | documents | tokens | archc, first time (read, tokenize, pack, cache) | from the cache | "
        "the `tokenizers` library alone (read + encode) | ratio | target ≤ 60 s |",
        "|---|---|---|---|---|---|---|---|",
        f"| {row['mb']} MB | {docs:,} | {row['tokens']:,} | {row['cold_s']} s ({row['mb_per_s']} MB/s) | "
        f"{row['warm_s']} s | {row['library_s']} s | {row['ratio']}× | {'met' if row['met'] else 'missed'} |",
    ])
    publish(args.results, ROOT / "docs" / "hf.md", START, END, table)
    print(table)


if __name__ == "__main__":
    main()
