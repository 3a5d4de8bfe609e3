"""Bad, unlucky and hostile inputs to every command that reads or writes a user's files, run as a
user runs them (one subprocess each): no traceback, no internal error (ARC9999), the documented
exit status, and nothing outside the scratch folder changed. Results go to docs/hostile.md.

    python tools/hostile_sweep.py [--jobs 2] [--only PART,PART] [--json results.json] [--markdown docs/hostile.md]

The CI suite (tests/hostile/) holds one test per class of input; this sweep holds the long tail
(over 300 inputs, ~10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.conftest import tiny_lm_spec  # noqa: E402  (the spec the hostile tests use)

SPEC = tiny_lm_spec(vocab=256, d=16, heads=2, hidden=32)


@dataclass
class Case:
    name: str
    argv: list[str]
    expect: tuple[int, ...]  # acceptable exit statuses
    code: str | None = None  # the diagnostic code expected (None: any, or none for exit 0)
    writes_into: str | None = None  # a user's folder the command may add its files to (never change theirs)


def fixtures(w: Path) -> dict[str, str]:
    """The files the cases point at, made once: a spec, its weights, an export, a run folder, and
    hostile variants of each."""
    py = sys.executable
    (w / "t.arch").write_text(SPEC)
    (w / "other.arch").write_text(SPEC.replace("hidden=32", "hidden=48"))
    (w / "small-vocab.arch").write_text(tiny_lm_spec(vocab=100, d=16, heads=2, hidden=32))
    (w / "bytes-vocab.arch").write_text(tiny_lm_spec(vocab=320, d=16, heads=2, hidden=32))  # bytes + end of text
    run = [py, "-m", "archc"]
    subprocess.run([*run, "build", str(w / "t.arch"), "-o", str(w / "w.safetensors")], check=True, capture_output=True)
    subprocess.run([*run, "export", str(w / "t.arch"), "-o", str(w / "exp")], check=True, capture_output=True)
    subprocess.run([*run, "train", str(w / "t.arch"), "--task", "copy", "--steps", "2", "--batch", "2", "--seq", "16",
                    "-q", "-o", str(w / "run")], check=True, capture_output=True)
    raw = (w / "w.safetensors").read_bytes()
    (w / "truncated.safetensors").write_bytes(raw[:len(raw) // 2])
    (w / "garbage.safetensors").write_bytes(os.urandom(4096))
    (w / "header-bomb.safetensors").write_bytes((2**62).to_bytes(8, "little") + b"{}")
    (w / "empty").write_bytes(b"")
    (w / "notutf8.arch").write_bytes(b"model m(tokens) {\n  x = embed(tokens, 256, 16) \xff\xfe\n}\n")
    (w / "a.txt").write_text("short")
    (w / "bin.txt").write_bytes(os.urandom(5000))
    (w / "afile").write_text("a file")
    (w / "afile.dot").write_text("a file")
    (w / "dir").mkdir()
    (w / "userdir").mkdir()
    (w / "userdir" / "notes.txt").write_text("the user's own file")
    (w / "json-exists.json").write_text("{}")
    os.symlink(w / "afile", w / "link")
    os.symlink(w / "afile.dot", w / "link.dot")
    for name, edit in MANIFEST_EDITS.items():
        d = w / f"m-{name}"
        shutil.copytree(w / "exp", d)
        edit(d)
    hf_fixtures(w)
    return {"w": str(w)}


# A random-initialized two-layer transformers Llama saved as a user's checkpoint folder would be.
_HF_LLAMA = """
import sys, torch, transformers
cfg = transformers.LlamaConfig(vocab_size=256, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                               num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
torch.manual_seed(0)
transformers.LlamaForCausalLM(cfg).save_pretrained(sys.argv[1])
"""


def hf_fixtures(w: Path) -> None:
    """Hugging Face folders, corpora and tokenizers for import-hf, export-hf, eval and train --data: a
    good checkpoint folder and hostile variants of it (a pickle that would leave a marker if loaded,
    damaged configs, a truncated shard)."""
    subprocess.run([sys.executable, "-c", _HF_LLAMA, str(w / "hf")], check=True, capture_output=True)
    for name in ("hf-pickle", "hf-config-garbage", "hf-config-notutf8", "hf-config-list", "hf-unknown-family",
                 "hf-truncated", "hf-no-weights", "hf-config-link"):
        shutil.copytree(w / "hf", w / name)
    pickle_payload = (b"cos\nsystem\n(S'touch " + str(w / "PWNED").encode() + b"'\ntR.")
    (w / "hf-pickle" / "model.safetensors").unlink()
    (w / "hf-pickle" / "pytorch_model.bin").write_bytes(pickle_payload)
    (w / "hf-config-garbage" / "config.json").write_bytes(os.urandom(300))
    (w / "hf-config-notutf8" / "config.json").write_bytes(b'{"model_type": "llama\xff"}')
    (w / "hf-config-list" / "config.json").write_text("[]")
    cfg = json.loads((w / "hf" / "config.json").read_text())
    (w / "hf-unknown-family" / "config.json").write_text(json.dumps({**cfg, "model_type": "nosuchfamily"}))
    raw = (w / "hf" / "model.safetensors").read_bytes()
    (w / "hf-truncated" / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    (w / "hf-no-weights" / "model.safetensors").unlink()
    (w / "hf-config-link" / "config.json").unlink()
    os.symlink("/etc/passwd", w / "hf-config-link" / "config.json")
    (w / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog. " * 200)
    (w / "corpus.jsonl").write_text("\n".join(json.dumps({"text": "a line of text " * 20}) for _ in range(50)))
    (w / "corpus-bad.jsonl").write_text('{"text": "fine"}\n{not json\n')
    (w / "corpus-notutf8.txt").write_bytes(b"good text " * 100 + b"\xff\xfe" + b"more " * 100)
    (w / "tok-garbage.json").write_bytes(os.urandom(500))
    (w / "tok-empty.json").write_text("{}")


def _manifest(fn):
    def edit(d: Path) -> None:
        p = d / "archc_export.json"
        m = json.loads(p.read_text())
        fn(m, d)
        p.write_text(json.dumps(m))
    return edit


def _raw(data: bytes):
    return lambda d: (d / "archc_export.json").write_bytes(data)


MANIFEST_EDITS = {
    "model-abs": _manifest(lambda m, d: m.update(model="/etc/passwd")),
    "model-dotdot": _manifest(lambda m, d: m.update(model="../exp/model.onnx")),
    "model-empty": _manifest(lambda m, d: m.update(model="")),
    "model-dir": _manifest(lambda m, d: (d / "sub").mkdir() or m.update(model="sub")),
    "model-missing": _manifest(lambda m, d: m.update(model="nope.onnx")),
    "model-link": lambda d: ((d / "model.onnx").unlink(), os.symlink("/etc/passwd", d / "model.onnx")),
    "model-garbage": lambda d: (d / "model.onnx").write_bytes(os.urandom(2000)),
    "model-empty-file": lambda d: (d / "model.onnx").write_bytes(b""),
    "manifest-link": lambda d: ((d / "archc_export.json").unlink(), os.symlink("/etc/hostname", d / "archc_export.json")),
    "manifest-notutf8": _raw(b'{"format": "\xff"}'),
    "manifest-empty": _raw(b""),
    "manifest-list": _raw(b"[]"),
    "manifest-deep": _raw(b"[" * 100000 + b"]" * 100000),
    "manifest-nul": _raw(b'{"format": "archc-onnx/1\x00"}'),
    "state-huge": _manifest(lambda m, d: [s["shape"].__setitem__(1, 10**7) for s in m["state"]]),
    "state-neg": _manifest(lambda m, d: m["state"][0]["shape"].__setitem__(1, -3)),
    "state-symbol": _manifest(lambda m, d: m["state"][0]["shape"].__setitem__(1, "heads")),
    "state-fill": _manifest(lambda m, d: m["state"][0].update(fill=[1, 2, 3])),
    "state-fill-str": _manifest(lambda m, d: m["state"][0].update(fill="x")),
    "state-dtype": _manifest(lambda m, d: m["state"][0].update(dtype="complex128")),
    "state-dup": _manifest(lambda m, d: m["state"].append(m["state"][0])),
    "state-none": _manifest(lambda m, d: m.update(state=[])),
    "vocab-0": _manifest(lambda m, d: m.update(vocab=0)),
    "vocab-big": _manifest(lambda m, d: m.update(vocab=10**12)),
    "vocab-off": _manifest(lambda m, d: m.update(vocab=1000)),
    "kind-forward": _manifest(lambda m, d: m.update(kind="forward")),
    "kind-bad": _manifest(lambda m, d: m.update(kind="encoder")),
    "opset-bad": _manifest(lambda m, d: m.update(opset=-1)),
    "format-bad": _manifest(lambda m, d: m.update(format="archc-onnx/9")),
    "extra-key": _manifest(lambda m, d: m.update(evil=1)),
    "spec-escape": _manifest(lambda m, d: m.update(spec="\x1b]0;pwned\x07\x1b[2J", kind="forward")),
    "input-name": _manifest(lambda m, d: m["inputs"][0].update(name="x")),
    "input-dtype": _manifest(lambda m, d: m["inputs"][0].update(dtype="float32")),
    "quant-ref-abs": _manifest(lambda m, d: m.update(quantization={"scheme": "int8_dynamic", "asked": "int8", "tool": "t",
                                                                   "reference": "/"})),
    "quant-ref-dotdot": _manifest(lambda m, d: m.update(quantization={"scheme": "int8_dynamic", "asked": "int8",
                                                                      "tool": "t", "reference": "../exp"})),
    "quant-scheme-bad": _manifest(lambda m, d: m.update(quantization={"scheme": "int3", "asked": "int3", "tool": "t"})),
    "genai-missing": lambda d: (d / "genai_config.json").unlink(),
    "txn-leftover": lambda d: (d / ".archc-txn-deadbeef").mkdir(),
}


def cases(w: Path) -> list[Case]:
    t, o, e = str(w / "t.arch"), str(w / "out"), str(w / "exp")
    c: list[Case] = []

    def add(name, argv, expect, code=None, writes_into=None):
        c.append(Case(name, [str(a) for a in argv], expect if isinstance(expect, tuple) else (expect,), code,
                      writes_into))

    # -- files a command reads ---------------------------------------------------------------
    for cmd in (["build"], ["generate", "--max-new-tokens", "1"], ["export", "-o", o + "-s"],
                ["train", "--steps", "1", "-o", o + "-t"], ["prune", "--ffn", "0.5", "-o", o + "-p"]):
        for label, spec, code in (("missing spec", w / "nope.arch", "ARC0001"), ("spec is a dir", w / "dir", "ARC0001"),
                                  ("spec not UTF-8", w / "notutf8.arch", "ARC0001"),
                                  ("empty spec", w / "empty", None)):
            add(f"{cmd[0]}: {label}", ["archc", cmd[0], spec, *cmd[1:]], 1, code)
    for flag, cmd in (("--weights", ["export", t, "-o", o + "-w"]), ("--weights", ["generate", t]),
                      ("--weights", ["prune", t, "--ffn", "0.5", "-o", o + "-pw"]),
                      ("--init", ["train", t, "--steps", "1", "-o", o + "-i"]),
                      ("--teacher", ["train", t, "--steps", "1", "--distill", t, "-o", o + "-d"])):
        for label, path in (("missing", w / "nope.safetensors"), ("truncated", w / "truncated.safetensors"),
                            ("garbage", w / "garbage.safetensors"), ("header bomb", w / "header-bomb.safetensors"),
                            ("empty", w / "empty"), ("a folder", w / "dir"), ("/dev/null", "/dev/null"),
                            ("another spec's", w / "w.safetensors") if cmd[1] != t else ("a spec file", t)):
            add(f"{cmd[0]} {flag}: {label}", ["archc", *cmd, flag, path], 1, "ARC0902")
    add("generate --weights of another spec", ["archc", "generate", w / "other.arch", "--weights", w / "w.safetensors"],
        1, "ARC0902")
    for label, src in (("missing file", w / "nope.txt"), ("shorter than a sequence", w / "a.txt"),
                       ("a folder", w / "dir"), ("unknown task", "nosuchtask"), ("empty name", ":4")):
        add(f"export --calibrate {label}", ["archc", "export", t, "-o", o + "-c", "--quantize", "int8_static",
                                             "--calibrate", f"{src}:4"], (1, 2))
        add(f"prune --calibrate {label}", ["archc", "prune", t, "--ffn", "0.5", "--importance", "taylor",
                                           "--calibrate", f"{src}:4", "-o", o + "-pc"], (1, 2))
        add(f"compress-report --data {label}", ["archc", "compress-report", e, "--data", f"{src}:4", "--no-timing"],
            (1, 2))
    add("export --calibrate binary file", ["archc", "export", t, "-o", o + "-cb", "--quantize", "int8_static",
                                           "--calibrate", f"{w / 'bin.txt'}:4", "--calibrate-seq", "16"], (0,))
    add("train --task chars, vocab 100", ["archc", "train", w / "small-vocab.arch", "--task", "chars", "--steps", "1",
                                          "-o", o + "-v"], 1, "ARC0907")
    # -- export folders read back --------------------------------------------------------------
    for name in MANIFEST_EDITS:
        expect = (0,) if name in ("genai-missing", "txn-leftover") else (1,)
        add(f"run: manifest {name}", ["archc", "run", w / f"m-{name}", "--max-new-tokens", "2"], expect)
        add(f"compress-report: manifest {name}", ["archc", "compress-report", w / f"m-{name}", "--no-timing",
                                                  "--data", "chars:2", "--seq", "8"], expect)
    for label, path in (("missing", w / "nope"), ("a file", w / "afile"), ("empty folder", w / "dir"),
                        ("a link", w / "link"), ("the root", "/")):
        add(f"run: {label}", ["archc", "run", path], 1, "ARC1104")
    add("compress-report --reference missing", ["archc", "compress-report", e, "--reference", w / "nope", "--no-timing"],
        1, "ARC1104")
    # -- outputs -------------------------------------------------------------------------------------
    for cmd in (["export", t], ["prune", t, "--ffn", "0.5"], ["train", t, "--steps", "1"], ["build", t],
                ["graph", t], ["passes", t, "--dump-after", "all"]):
        dot = ".dot" if cmd[0] == "graph" else ""  # graph picks its format from the suffix
        add(f"{cmd[0]} -o a file", ["archc", *cmd, "-o", f"{w / 'afile'}{dot}"], (1,), "ARC0903")
        add(f"{cmd[0]} -o under a file", ["archc", *cmd, "-o", f"{w / 'afile' / 'sub'}{dot}"], (1,))
        add(f"{cmd[0]} -o /proc", ["archc", *cmd, "-o", f"/proc/archc-out{dot}"], (1,))
        add(f"{cmd[0]} -o a link", ["archc", *cmd, "-o", f"{w / 'link'}{dot}", "--force"], (1,), "ARC1302")
        add(f"{cmd[0]} -o ''", ["archc", *cmd, "-o", ""], 2, "ARC1307")
    add("graph -o without a format", ["archc", "graph", t, "-o", w / "out-graph"], 2, "ARC1307")
    add("compress-report --json a folder", ["archc", "compress-report", e, "--json", w / "dir"], 1, "ARC0903")
    add("compress-report --json existing", ["archc", "compress-report", e, "--json", w / "json-exists.json"], 1, "ARC0903")
    add("train --resume without a run", ["archc", "train", t, "--resume", "-o", w / "dir"], 2, "ARC0905")
    add("train over a run without --resume", ["archc", "train", t, "-o", w / "run"], 1, "ARC0903")
    # -- numbers and prompts ---------------------------------------------------------------------
    for argv, status in (
            (["run", e, "--top-k", "100000"], 2), (["run", e, "--stop-token", "5000"], 2),
            (["run", e, "--prompt-ids", "a b"], 2), (["run", e, "--prompt-ids", "999"], 2), (["run", e, "--prompt-ids", ""], 2),
            (["run", e, "--prompt-ids", "1," * 30000], (0, 1)), (["run", e, "--max-new-tokens", "1000000000"], 1),
            (["run", e, "--benchmark", "--max-new-tokens", "0"], 2), (["run", e, "--benchmark", "--bench-prompt", "10000000"], 1),
            (["run", e, "--max-memory", "0"], 2), (["run", e, "--max-memory", "lots"], 2), (["run", e, "--threads", "0"], 2),
            (["generate", t, "--top-k", "100000"], 2), (["generate", t, "--max-new-tokens", "1000000000"], 1),
            (["generate", t, "--num-beams", "100"], 2), (["generate", t, "--draft-weights", w / "w.safetensors"], 2),
            (["generate", t, "--draft", w / "small-vocab.arch", "--max-new-tokens", "2"], 1),
            (["train", t, "--batch", "1000000000", "-o", o + "-b"], 1), (["train", t, "--seq", "100000000", "-o", o + "-q"], 1),
            (["train", t, "--teacher", w / "w.safetensors", "-o", o + "-x"], 2),
            (["train", t, "--distill", w / "small-vocab.arch", "--steps", "1", "-o", o + "-y"], 1),
            (["export", t, "-o", o + "-cs", "--quantize", "int8_static", "--calibrate", "chars:1000000",
              "--calibrate-seq", "1000000"], 1),
            (["prune", t, "--ffn", "0.5", "--importance", "taylor", "--calibrate", "chars:1000000", "--calibrate-seq",
              "1000000", "-o", o + "-pq"], 1),
            (["compress-report", e, "--data", "chars:1000000", "--seq", "1000000"], 1),
            (["export", t, "-o", o + "-k", "--keep", "fp32:nosuchclass"], 2), (["export", t, "-o", o + "-k2", "--keep", "x"], 2),
            (["export", t, "-o", o + "-k3", "--calibrate", "chars:4"], 2),
            (["export", t, "-o", o + "-op", "--opset", "99"], 2),
            (["prune", t, "-o", o + "-n"], 2), (["prune", t, "--experts", "2", "-o", o + "-e"], 1),
            (["prune", t, "--layers", "100", "-o", o + "-l"], (1, 2)), (["prune", t, "--only", "[", "--ffn", "0.5", "-o", o + "-g"], (0, 1, 2)),
            (["summary", t, "--seq", "1000000000000"], 0), (["passes", t, "--pipeline", "nosuchpass"], 2),
            (["explain", "ARC99999"], 2), (["ops", "nosuchop"], 2),
    ):
        add(f"{argv[0]} {' '.join(str(a) for a in argv[2:])[:70]}", ["archc", *argv], status if isinstance(status, tuple)
            else (status,))
    newer_commands(add, w, t, o)
    return c


def newer_commands(add, w: Path, t: str, o: str) -> None:
    """The commands and flags that came after the first sweep: import-hf, export-hf, eval, plan, kernels,
    bench, and train's --data, --nproc, --plan, --pairs, --compile."""
    for label, folder, code in (("missing", w / "nope", "ARC1401"), ("an empty folder", w / "dir", "ARC1401"),
                                ("a file", w / "afile", "ARC1401"),
                                ("a pickle (never unpickled)", w / "hf-pickle", "ARC1401"),
                                ("config garbage", w / "hf-config-garbage", "ARC1401"),
                                ("config not UTF-8", w / "hf-config-notutf8", "ARC1401"),
                                ("config a list", w / "hf-config-list", "ARC1401"),
                                ("config a link out", w / "hf-config-link", "ARC1401"),
                                ("unknown family", w / "hf-unknown-family", "ARC1401"),
                                ("truncated shard", w / "hf-truncated", "ARC1401"),
                                ("no weights", w / "hf-no-weights", "ARC1401")):
        add(f"import-hf: {label}", ["archc", "import-hf", folder, "-o", o + "-hf.arch", "--weights", o + "-hf.safetensors"],
            1, code)
    add("import-hf -o ''", ["archc", "import-hf", w / "hf", "-o", ""], 2, "ARC1307")
    add("import-hf -o an existing file", ["archc", "import-hf", w / "hf", "-o", w / "afile"], 1, "ARC0903")
    add("import-hf -o a link", ["archc", "import-hf", w / "hf", "-o", w / "link", "--force"], 1, "ARC1302")
    add("import-hf --weights onto its own source", ["archc", "import-hf", w / "hf", "-o", o + "-hf2.arch", "--weights",
                                                    w / "hf" / "model.safetensors", "--force"], 1)
    add("import-hf: a good folder", ["archc", "import-hf", w / "hf", "-o", o + "-hf3.arch", "--weights",
                                     o + "-hf3.safetensors"], 0)
    add("export-hf -o ''", ["archc", "export-hf", t, "-o", ""], 2, "ARC1307")
    add("export-hf -o a file", ["archc", "export-hf", t, "-o", w / "afile"], 1, "ARC0903")
    add("export-hf -o a link", ["archc", "export-hf", t, "-o", w / "link", "--force"], 1, "ARC1302")
    add("export-hf -o a folder of the user's", ["archc", "export-hf", t, "-o", w / "hf"], 1, "ARC0903")
    add("export-hf --weights truncated", ["archc", "export-hf", t, "--weights", w / "truncated.safetensors", "-o",
                                          o + "-ehf"], 1, "ARC0902")
    add("export-hf --tokenizer garbage", ["archc", "export-hf", t, "--tokenizer", w / "tok-garbage.json", "-o",
                                          o + "-ehf2"], 1)
    for label, extra, status in (
            ("--data missing", ["--data", w / "nope.txt"], (1, 2)), ("--data an empty folder", ["--data", w / "dir"], 1),
            ("--data shorter than a window (scored as far as it goes)", ["--data", w / "a.txt", "--seq", "64"], 0),
            ("--data bad jsonl", ["--data", w / "corpus-bad.jsonl"], 1),
            ("--data jsonl without the field", ["--data", w / "corpus.jsonl", "--text-field", "nosuch"], 1),
            ("--data not UTF-8", ["--data", w / "corpus-notutf8.txt", "--seq", "16"], (0, 1)),
            ("--data /dev/zero", ["--data", "/dev/zero"], 1),
            ("--tokenizer garbage", ["--data", w / "corpus.txt", "--tokenizer", w / "tok-garbage.json"], 1),
            ("--tokenizer {}", ["--data", w / "corpus.txt", "--tokenizer", w / "tok-empty.json"], 1),
            ("--tokenizer missing", ["--data", w / "corpus.txt", "--tokenizer", w / "nope.json"], (1, 2)),
            ("--data with a vocabulary too small for bytes", ["--data", w / "corpus.txt"], 1),
            ("--cache-dir a file (a warning, not cached)", ["--data", w / "corpus.txt", "--cache-dir", w / "afile"], 0),
            ("--seq 0", ["--data", w / "corpus.txt", "--seq", "0"], 2),
            ("--batch 0", ["--data", w / "corpus.txt", "--batch", "0"], 2),
            ("--max-tokens -1", ["--data", w / "corpus.txt", "--max-tokens", "-1"], 2),
            ("--task mqar --pairs 0", ["--task", "mqar", "--pairs", "0"], 2),
            ("--task mqar --pairs 40 --seq 64", ["--task", "mqar", "--pairs", "40", "--seq", "64"], 2),
            ("--batches 0", ["--task", "copy", "--batches", "0"], 2),
            ("--weights truncated", ["--data", w / "corpus.txt", "--weights", w / "truncated.safetensors"], 1),
            ("--data and --task", ["--data", w / "corpus.txt", "--task", "copy"], 2),
            ("--data a good file", ["--data", w / "corpus.txt", "--seq", "32", "--cache-dir", o + "-cache"], 0)):
        # a vocabulary that holds the bytes tokenizer's 257 ids, so the data itself is what gets checked
        spec = t if "too small" in label else w / "bytes-vocab.arch"
        add(f"eval {label}", ["archc", "eval", spec, *extra], status if isinstance(status, tuple) else (status,))
    for label, extra, status in (
            ("--data missing", ["--data", w / "nope.txt"], (1, 2)),
            ("--data jsonl without the field", ["--data", w / "corpus.jsonl", "--text-field", "nosuch"], 1),
            ("--val-fraction 1", ["--data", w / "corpus.txt", "--val-fraction", "1"], 2),
            ("--val-fraction nan", ["--data", w / "corpus.txt", "--val-fraction", "nan"], 2),
            ("--val-every 0", ["--data", w / "corpus.txt", "--val-every", "0"], 2),
            ("--task mqar --pairs 40 --seq 64", ["--task", "mqar", "--pairs", "40", "--seq", "64"], 1),
            ("--pairs 0", ["--task", "mqar", "--pairs", "0"], 2),
            ("--nproc 0", ["--nproc", "0"], 2), ("--nproc 100000", ["--nproc", "100000"], 2),
            ("--plan tp=0", ["--nproc", "2", "--plan", "tp=0"], 2), ("--plan nonsense", ["--nproc", "2", "--plan", "x=y"], 2),
            ("--plan tp=3 of 2 processes", ["--nproc", "2", "--plan", "tp=3"], 2),
            ("--plan without --nproc", ["--plan", "tp=2"], 2),
            ("--nproc 2 --compile", ["--nproc", "2", "--compile"], 2),
            ("--warmup -1", ["--warmup", "-1"], 2), ("--accum 0", ["--accum", "0"], 2),
            ("--device cuda (none here)", ["--device", "cuda"], (0, 1)),
            ("--kernels triton on the CPU", ["--kernels", "triton", "--batch", "1", "--seq", "16"], (0, 1))):
        add(f"train {label}", ["archc", "train", w / "bytes-vocab.arch", "--steps", "1", "-q", "-o", f"{o}-tr-{len(label)}", *extra],
            status if isinstance(status, tuple) else (status,))
    add("generate --compile --num-beams 2", ["archc", "generate", t, "--compile", "--num-beams", "2"], 2)
    for extra in (["--devices", "0"], ["--devices", "-8"], ["--nodes", "0"], ["--memory", "lots"], ["--memory", "0GB"],
                  ["--peak", "0TFLOPS"], ["--efficiency", "0"], ["--efficiency", "1.5"], ["--efficiency", "nan"],
                  ["--plan", "tp=0"], ["--plan", "tp=3,pp=x"], ["--seq", "0"], ["--global-batch", "0"], ["--top", "-1"],
                  ["--devices", "10000000000"]):
        add(f"plan {' '.join(extra)}", ["archc", "plan", t, *extra], 2, "ARC1307")
    add("kernels --emit ''", ["archc", "kernels", t, "--emit", ""], 2, "ARC1307")
    add("kernels --emit a file", ["archc", "kernels", t, "--emit", w / "afile"], 1, "ARC0903")
    add("kernels --emit a link", ["archc", "kernels", t, "--emit", w / "link", "--force"], 1, "ARC1302")
    # a folder with the user's files: the kernel files go in beside them, theirs untouched (docs/kernels.md)
    add("kernels --emit a folder of the user's", ["archc", "kernels", t, "--emit", w / "userdir"], 0,
        writes_into="userdir")
    for extra, status in ((["--seq", "0"], 2), (["--seq", "a,b"], 2), (["--train", "0x4"], 2), (["--train", "abc"], 2),
                          (["--repeat", "0"], 2), (["--threads", "0"], 2), (["--threads", "100000"], 2),
                          (["--new-tokens", "-1"], 2), (["--prompt", "-1"], 2), (["--workloads", "nosuch"], 2),
                          (["--plot", ""], 2), (["--plot", w / "afile"], 1), (["--plot", w / "link", "--force"], 1),
                          (["--seq", "100000000"], 2), (["--device", "cuda"], 1)):
        add(f"bench {' '.join(str(a) for a in extra)[:60]}", ["archc", "bench", t, "--vs", "none", "-q", *extra], status)


def run_case(case: Case, w: Path, growing: frozenset[str] = frozenset()) -> dict:
    """One input in a subprocess. `growing`: the user folders some case may add its files to (this
    one or one running beside it); their files must stay, unchanged."""
    before = _digest(w)
    t0 = time.perf_counter()
    env = {**os.environ, "NO_COLOR": "1", "TMPDIR": str(w / "systmp")}
    try:
        r = subprocess.run([sys.executable, "-m", *case.argv], capture_output=True, timeout=300, cwd=w, env=env)
        status, err = r.returncode, r.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired:
        status, err = -1, "timed out after 300 s"
    problems = []
    if "Traceback" in err or "internal error[ARC9999]" in err or status == 3:
        problems.append("internal error")
    if status not in case.expect:
        problems.append(f"exit {status}, expected {'/'.join(map(str, case.expect))}")
    if case.code and case.code not in err:
        problems.append(f"no {case.code}")
    if status not in (0, -1) and "help:" not in err and "error[" in err:
        problems.append("no hint")
    after = _digest(w)
    changed = sorted(k for k in before if after.get(k) != before[k] and not k.startswith(("out", ".out", "systmp"))
                     and not (k in growing and set(before[k].split(",")) <= set(after[k].split(","))))
    if changed:
        problems.append(f"changed {changed[:3]}")
    # (".out…": another case's output stage, made by a case running beside this one)
    created = sorted(k for k in after if k not in before and not k.startswith(("out", ".out", "systmp", ".archc-cache")))
    if created:  # a file outside the outputs (a pickle's marker, a stray temp file)
        problems.append(f"created {created[:3]}")
    code = next((err[i + 6:i + 13] for i in range(len(err)) if err.startswith("error[", i)), None)
    return {"name": case.name, "status": status, "code": code, "seconds": round(time.perf_counter() - t0, 1),
            "problems": problems, "stderr": err[-400:] if problems else ""}


def _digest(w: Path) -> dict[str, str]:
    out = {}
    for p in sorted(w.iterdir()):
        if p.is_file() and not p.is_symlink():
            out[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir() and not p.is_symlink():  # its entries, and each file's content
            out[p.name] = ",".join(f"{q.name}:{hashlib.sha256(q.read_bytes()).hexdigest()[:16] if q.is_file() else ''}"
                                   for q in sorted(p.iterdir()))
    return out


def markdown(results: list[dict], leftovers: list[str], seconds: float) -> str:
    bad = [r for r in results if r["problems"]]
    lines = ["# Hostile inputs: the sweep", "",
             "`python tools/hostile_sweep.py --markdown docs/hostile.md` runs every input below as a user runs it (one "
             "`python -m archc` process each, 2 at a time) and checks: no traceback and no internal error (ARC9999), "
             "the documented exit status, the diagnostic's code and a `help:` line, no file outside the output changed "
             "or created (a pickle's marker included) and a user's files in a folder archc writes into kept as they "
             "were, "
             "nothing of archc's left in the system temp dir. The CI suite (`tests/hostile/`) holds one test per class "
             "of input; this holds the long tail.", "",
             f"**{len(results)} inputs, {len(results) - len(bad)} as documented, {len(bad)} not** "
             f"({seconds:.0f} s on this machine); system temp dir afterwards: "
             f"{', '.join(leftovers) or 'nothing of archc (only onnxruntime’s `.ses`, lark’s grammar cache, torch’s empty inductor folder)'}.",
             "", "| input | exit | code | as documented |", "| --- | --- | --- | --- |"]
    for r in results:
        name = re.sub(r"/[^ ]*archc-hostile-[a-z0-9_]+", "$W", r["name"]).replace("|", "\\|")
        lines.append(f"| {name} | {r['status']} | {r['code'] or ''} | "
                     f"{'yes' if not r['problems'] else 'NO: ' + '; '.join(r['problems'])} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", default="", help="run the inputs whose name holds one of these comma-separated parts")
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None, help="write the table of every input and its outcome here")
    args = ap.parse_args()
    w = Path(tempfile.mkdtemp(prefix="archc-hostile-"))
    (w / "systmp").mkdir()
    fixtures(w)
    todo = [c for c in cases(w) if any(part in c.name for part in args.only.split(","))]
    growing = frozenset(c.writes_into for c in todo if c.writes_into)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda c: run_case(c, w, growing), todo))
    bad = [r for r in results if r["problems"]]
    # libraries' own markers: onnxruntime's session id, lark's grammar cache, torch's (empty) inductor dir
    leftovers = [n for n in os.listdir(w / "systmp") if n != ".ses" and not n.startswith(".lark_cache")
                 and not (n.startswith("torchinductor_") and not os.listdir(w / "systmp" / n))]
    print(f"{len(results)} inputs in {time.perf_counter() - t0:.0f} s: {len(results) - len(bad)} as documented, "
          f"{len(bad)} not; system temp dir: {leftovers or 'nothing of archc'}")
    for r in bad:
        print(f"  {r['name']}: {'; '.join(r['problems'])}\n    {r['stderr'].strip()[-300:]}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "tmp_leftovers": leftovers}, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown(results, leftovers, time.perf_counter() - t0))
    shutil.rmtree(w, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
