"""`archc build`, `archc train`, `archc generate` end to end, and their diagnostics."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from archc.cli import main
from tests.conftest import tiny_lm_spec

TINY = tiny_lm_spec(vocab=256)


def test_build_writes_reproducible_weights_and_refuses_overwrite(tmp_path: Path, capsys):
    out = tmp_path / "w.safetensors"
    assert main(["build", "specs/llama-tiny.arch", "--seed", "0", "-o", str(out)]) == 0
    assert "3,819,776 parameters" in capsys.readouterr().out
    first = load_file(str(out))
    assert main(["build", "specs/llama-tiny.arch", "-o", str(out)]) == 1
    assert "ARC0903" in capsys.readouterr().err
    assert main(["build", "specs/llama-tiny.arch", "--init-seed", "0", "-o", str(out), "--force"]) == 0
    again = load_file(str(out))
    assert all((first[k] == again[k]).all() for k in first)


def test_build_of_an_op_without_module_points_at_the_call(capsys, without_mamba_module):
    assert main(["build", "specs/mamba-tiny.arch"]) == 1
    err = capsys.readouterr().err
    assert "ARC0901" in err and "mamba-tiny.arch:" in err and "^" in err and "Traceback" not in err


def test_train_then_generate(tmp_path: Path, write_spec, capsys):
    spec = str(write_spec(TINY))
    run = tmp_path / "run"
    args = ["train", spec, "--task", "chars", "--steps", "4", "--batch", "2", "--seq", "32", "--out", str(run), "-q"]
    assert main(args) == 0
    assert {"last.safetensors", "train_state.safetensors", "loss.png"} <= {p.name for p in run.iterdir()}
    assert main(args) == 1  # a finished run is never overwritten without asking
    assert "ARC0903" in capsys.readouterr().err
    resumed = [a if a != "4" else "8" for a in args]  # four more steps on top of the first four
    assert main([*resumed, "--resume"]) == 0
    capsys.readouterr()
    gen = ["generate", spec, "--weights", str(run / "last.safetensors"), "--prompt", "def ", "--max-new-tokens", "5"]
    assert main(gen) == 0
    eager = capsys.readouterr().out
    assert eager.startswith("def ")
    assert main([*gen, "--compile"]) == 0  # the compiled decode step generates what the eager one does
    assert capsys.readouterr().out == eager
    assert main([*gen, "--compile", "--num-beams", "2"]) == 2
    assert "ARC1702" in capsys.readouterr().err
    assert main(["generate", spec, "--prompt-ids", "1 2 3", "--max-new-tokens", "4", "--num-beams", "2"]) == 0
    assert len(capsys.readouterr().out.split()) == 7
    # accuracy on the task, over held-out draws, at twice the trained length
    ev = ["eval", spec, "--weights", str(run / "last.safetensors"), "--task", "induction", "--seq", "64",
          "--batches", "2", "--batch", "2", "--json"]
    assert main(ev) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["task"] == "induction" and figures["seq"] == 64 and figures["scored"] == 4 * 31
    assert 0.0 <= figures["accuracy"] <= 1.0 and figures["loss"] > 0
    neither = ["eval", spec, "--weights", str(run / "last.safetensors"), "--seq", "64"]
    for bad in ([*ev, "--data", "README.md"], neither):  # both, or neither, of --task and --data
        assert main(bad) == 2
        assert "ARC1307" in capsys.readouterr().err


def test_generate_with_mismatched_weights_is_a_diagnostic(tmp_path: Path, write_spec, capsys):
    out = tmp_path / "w.safetensors"
    assert main(["build", "specs/llama-tiny.arch", "-o", str(out)]) == 0
    assert main(["generate", str(write_spec(TINY)), "--weights", str(out)]) == 1
    err = capsys.readouterr().err
    assert "ARC0902" in err and "Traceback" not in err


def test_passages_are_the_facts_tasks(capsys):
    assert main(["train", "specs/llama-tiny.arch", "--task", "copy", "--passages", "2", "--steps", "1"]) == 1
    assert "ARC0907" in capsys.readouterr().err


def test_a_task_that_does_not_fit_its_length_is_refused_before_training(capsys):
    """40 MQAR pairs need 160 tokens: a diagnostic before the first step, not an internal error."""
    assert main(["train", "specs/llama-tiny.arch", "--task", "mqar", "--pairs", "40", "--seq", "64"]) == 1
    err = capsys.readouterr().err
    assert "ARC0907" in err and "160 tokens" in err and "ARC9999" not in err
    assert main(["eval", "specs/llama-tiny.arch", "--task", "mqar", "--pairs", "40", "--seq", "64"]) == 2
    err = capsys.readouterr().err
    assert "ARC1307" in err and "ARC9999" not in err


def test_generate_needs_a_causal_lm(capsys):
    assert main(["generate", "specs/bert-base.arch"]) == 1
    assert "ARC0906" in capsys.readouterr().err


def test_generate_decodes_an_encoder_decoder_from_its_source(write_spec, capsys):
    """The prompt is the source; the output is the target after the start token. A decoder whose
    self-attention sees later target tokens is refused."""
    from tests.backends.torch.test_seq2seq import SPEC, VOCAB

    spec = str(write_spec(SPEC, "t5.arch"))
    assert main(["generate", spec, "--prompt-ids", "1 2 3 4", "--max-new-tokens", "4", "--num-beams", "2"]) == 0
    target = [int(t) for t in capsys.readouterr().out.split()]
    assert len(target) == 4 and all(0 <= t < VOCAB for t in target)
    assert main(["generate", spec, "--prompt-ids", "1 2", "--compile"]) == 2  # a usage error, not a traceback
    assert "ARC1702" in capsys.readouterr().err
    bidirectional = str(write_spec(SPEC.replace("causal=true, ", ""), "t5b.arch"))
    assert main(["generate", bidirectional, "--prompt-ids", "1 2"]) == 1
    assert "lets a target token see later ones" in capsys.readouterr().err


def test_bad_draft_weights_and_prompt_ids_are_diagnostics(tmp_path: Path, capsys):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a safetensors file")
    assert main(["generate", "specs/llama-tiny.arch", "--draft", "specs/llama-tiny.arch",
                 "--draft-weights", str(bad), "--max-new-tokens", "2"]) == 1
    err = capsys.readouterr().err
    assert "ARC0902" in err and "--draft-weights" in err and "Traceback" not in err
    assert main(["generate", "specs/llama-tiny.arch", "--prompt-ids", "3 x 5"]) == 2  # a usage error
    assert "ARC0908" in capsys.readouterr().err


def test_max_layers_is_its_own_limit(capsys):
    assert main(["build", "specs/llama-tiny.arch", "--max-layers", "3"]) == 1
    assert "ARC0602" in capsys.readouterr().err


def test_runtime_flags_are_refused_where_they_cannot_apply(tmp_path: Path, write_spec, capsys, monkeypatch):
    spec = str(write_spec(TINY))
    base = ["train", spec, "--steps", "1", "--out", str(tmp_path / "run"), "-q"]
    assert main([*base, "--nproc", "2", "--compile"]) == 2  # refused before any process starts
    assert "ARC1602" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*base, "--device", "cuda"]) == 1
        err = capsys.readouterr().err
        assert "ARC0904" in err and "no CUDA device" in err
    gen = ["generate", spec, "--prompt-ids", "1 2", "--max-new-tokens", "3"]
    assert main([*gen, "--kernels", "triton"]) == 0  # the tests run Triton in its interpreter
    with_kernels = capsys.readouterr().out
    assert main([*gen, "--kernels", "torch"]) == 0
    assert capsys.readouterr().out == with_kernels
    monkeypatch.delenv("TRITON_INTERPRET")
    assert main([*gen, "--kernels", "triton"]) == 1  # on the CPU without it: refused, not a fallback
    err = capsys.readouterr().err
    assert "ARC1701" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
