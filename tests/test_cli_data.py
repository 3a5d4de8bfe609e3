"""Your own text from the command line: `archc train --data` with a Hugging Face tokenizer, `archc
eval`, and the same tokenizer through `generate`, `export` and `run`; the diagnostics of a
vocabulary too small for the tokenizer and of data without its text field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import archc
from archc.cli import main
from tests.conftest import SAMPLE_TEXT, tiny_lm_spec

pytest.importorskip("datasets")


def _corpus(root: Path) -> Path:
    data = root / "corpus"
    data.mkdir()
    lines = [json.dumps({"body": SAMPLE_TEXT.replace("cat", w), "id": i}) for i, w in enumerate(["cat", "dog", "fox"] * 6)]
    (data / "part.jsonl").write_text("\n".join(lines) + "\n")
    return data


def test_train_eval_generate_export_run_through_one_tokenizer(tmp_path: Path, write_spec, bpe_folder: Path, capsys):
    pytest.importorskip("onnxruntime")
    spec = str(write_spec(tiny_lm_spec(vocab=320)))
    data, run, edge = _corpus(tmp_path), tmp_path / "run", tmp_path / "edge"
    text = ["--data", str(data), "--text-field", "body"]
    assert main(["train", spec, *text, "--tokenizer", str(bpe_folder), "--steps", "4", "--batch", "2",
                 "--seq", "32", "--val-every", "2", "--out", str(run), "-q"]) == 0
    out = capsys.readouterr()
    assert "held-out loss" in out.out and "tokenized and cached" in out.err
    assert {"tokenizer.json", "tokenizer_config.json", "loss.png"} <= {p.name for p in run.iterdir()}
    meta = json.loads((run / "train_config.json").read_text())
    assert meta["val_every"] == 2

    weights = str(run / "last.safetensors")
    assert main(["eval", spec, "--weights", weights, *text, "--seq", "32", "--json", "-q"]) == 0
    out = capsys.readouterr()
    figures = json.loads(out.out.strip().splitlines()[-1])
    assert "read from the cache" in out.err and "beside the weights" in out.err  # the run's tokenizer
    assert figures["bytes"] == 18 * len(SAMPLE_TEXT.encode()) and 0 < figures["bits_per_byte"] < 20
    assert figures["perplexity"] == pytest.approx(2.718281828 ** figures["loss"], rel=1e-6)
    api = archc.evaluate(spec, weights, str(data), tokenizer=str(run / "tokenizer.json"), text_field="body", seq=32)
    assert api["loss"] == pytest.approx(figures["loss"], rel=1e-6) and api["tokens"] == figures["tokens"]

    assert main(["generate", spec, "--weights", weights, "--prompt", "Once upon", "--max-new-tokens", "6"]) == 0
    assert capsys.readouterr().out.startswith("Once upon")
    assert main(["export", spec, "--weights", weights, "-o", str(edge)]) == 0
    assert "tokenizer: tokenizer.json (300 tokens" in capsys.readouterr().out
    manifest = json.loads((edge / "archc_export.json").read_text())
    genai = json.loads((edge / "genai_config.json").read_text())
    assert manifest["tokenizer"] == "tokenizer.json" and manifest["eos_token_id"] == genai["model"]["eos_token_id"]
    assert (edge / "tokenizer.json").read_bytes() == (bpe_folder / "tokenizer.json").read_bytes()
    assert main(["run", str(edge), "--prompt", "Once upon", "--max-new-tokens", "6"]) == 0
    assert capsys.readouterr().out.startswith("Once upon")
    og = pytest.importorskip("onnxruntime_genai")  # genai reads the same tokenizer from the folder
    from transformers import AutoTokenizer

    ours = AutoTokenizer.from_pretrained(bpe_folder)(SAMPLE_TEXT, add_special_tokens=False)["input_ids"]
    assert [int(t) for t in og.Tokenizer(og.Model(str(edge))).encode(SAMPLE_TEXT)] == ours


def test_a_vocabulary_smaller_than_the_tokenizer_points_at_the_spec(tmp_path: Path, write_spec, bpe_folder: Path,
                                                                      capsys):
    spec = str(write_spec(tiny_lm_spec(vocab=256)))
    data = _corpus(tmp_path)
    assert main(["train", spec, "--data", str(data), "--text-field", "body", "--tokenizer", str(bpe_folder),
                 "--out", str(tmp_path / "r"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "ARC1502" in err and "300 tokens" in err and "embed(tokens, 256" in err and "^" in err
    assert "at least 300" in err and "Traceback" not in err
    # the byte vocabulary needs 257 ids (256 bytes and the end of a document)
    assert main(["eval", spec, "--data", str(data), "--text-field", "body", "-q"]) == 1
    assert "ARC1502" in capsys.readouterr().err


def test_data_flags_are_checked(tmp_path: Path, write_spec, capsys):
    spec = str(write_spec(tiny_lm_spec(vocab=300)))
    data = _corpus(tmp_path)
    assert main(["train", spec, "--data", str(data), "--task", "copy", "--out", str(tmp_path / "r")]) == 2
    assert "--task and --data" in capsys.readouterr().err
    assert main(["eval", spec, "--data", str(data), "-q"]) == 1  # records without a `text` field
    err = capsys.readouterr().err
    assert "ARC1504" in err and "'body', 'id'" in err and "--text-field" in err
    assert main(["eval", spec, "--data", str(tmp_path / "nope.txt")]) == 2
    assert "ARC1503" in capsys.readouterr().err
    # checked when the command line is parsed: an empty path would read the current folder
    for bad in (["--data", ""], ["--data", str(data), "--tokenizer", ""], ["--data", str(data), "--val-fraction", "0"],
                ["--data", str(data), "--val-fraction", "1"], ["--data", str(data), "--cache-dir", " "],
                ["--data", str(data), "--text-field", ""]):
        with pytest.raises(SystemExit) as e:
            main(["train", spec, *bad, "--out", str(tmp_path / "r")])
        assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["import-hf", "", "-o", str(tmp_path / "m.arch")])
    assert e.value.code == 2
    capsys.readouterr()
