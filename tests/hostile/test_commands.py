"""Bad, unlucky and hostile inputs to the commands that write (prune, compress-report, build) and
the inputs that used to be internal errors (ARC9999): each is a diagnostic with its code and a
hint, with the documented exit status, and changes nothing outside (or inside) what it may."""

from __future__ import annotations

import time

from archc.cli import main
from tests.hostile.conftest import SPEC, snapshot

MOE = """
model moe(tokens) {
  x = embed(tokens, 256, 16)
  x = x + moe(rmsnorm(x), experts=4, top_k=2, expert=swiglu(hidden=16))
  return lm_head(rmsnorm(x))
}
"""


def test_prune_refuses_a_file_as_its_folder_and_impossible_amounts(tmp_path, capsys):
    spec = tmp_path / "t.arch"
    spec.write_text(SPEC)
    (tmp_path / "afile").write_text("the user's")
    before = snapshot(tmp_path)
    assert main(["prune", str(spec), "--ffn", "0.5", "-o", str(tmp_path / "afile")]) == 1
    assert "ARC0903" in capsys.readouterr().err
    moe = tmp_path / "moe.arch"
    moe.write_text(MOE)
    assert main(["prune", str(moe), "--experts", "100", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "ARC1203" in err and "4 experts" in err and "at most 3" in err
    assert not (tmp_path / "o").exists()
    assert main(["prune", str(spec), "--heads", "0.01", "-o", str(tmp_path / "o")]) == 0
    assert "remove nothing" in capsys.readouterr().err
    assert snapshot(tmp_path, skip=tmp_path / "o") == {**before, "moe.arch": snapshot(tmp_path)["moe.arch"]}


def test_prune_with_force_replaces_only_its_three_files(tmp_path, capsys):
    spec = tmp_path / "t.arch"
    spec.write_text(SPEC)
    out = tmp_path / "o"
    assert main(["prune", str(spec), "--ffn", "0.5", "-o", str(out)]) == 0
    (out / "notes.txt").write_text("the user's")
    assert main(["prune", str(spec), "--ffn", "0.25", "-o", str(out)]) == 1
    assert "ARC0903" in capsys.readouterr().err
    assert main(["prune", str(spec), "--ffn", "0.25", "-o", str(out), "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "prune.json", "t-pruned.arch", "weights.safetensors"]
    assert "hidden=24" in (out / "t-pruned.arch").read_text()


def test_compress_report_refuses_an_existing_json_before_measuring(export_copy, tmp_path, capsys):
    report = tmp_path / "r.json"
    report.write_text("the user's")
    t0 = time.perf_counter()
    assert main(["compress-report", str(export_copy), "--json", str(report)]) == 1
    assert time.perf_counter() - t0 < 5  # refused up front, not after the measurement
    assert "ARC0903" in capsys.readouterr().err and report.read_text() == "the user's"
    assert main(["compress-report", str(export_copy), "--json", str(report), "--force", "--no-timing",
                 "--data", "chars:2", "--seq", "8"]) == 0
    assert report.read_text().startswith("{")


def test_build_refuses_a_link_and_leaves_its_target_alone(tmp_path, capsys):
    spec = tmp_path / "t.arch"
    spec.write_text(SPEC)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "w.safetensors").symlink_to(victim)
    assert main(["build", str(spec), "-o", str(tmp_path / "w.safetensors"), "--force"]) == 1
    assert "ARC1302" in capsys.readouterr().err and victim.read_text() == "precious"


def test_inputs_that_were_internal_errors_are_diagnostics(tiny, export_copy, tmp_path, capsys):
    spec = tiny[0]
    bad_utf8 = "caf\udce9"  # argv bytes that are not UTF-8, as Python hands them over
    assert main(["run", str(export_copy), "--prompt", bad_utf8, "--max-new-tokens", "1"]) == 0
    assert "caf\ufffd" in capsys.readouterr().out  # the byte went to the model; shown replaced
    assert main(["generate", str(spec), "--prompt", "\ud800", "--max-new-tokens", "1"]) == 2
    assert "ARC0908" in capsys.readouterr().err
    assert main(["export", str(spec), "-o", str(tmp_path / "x"), "--quantize", "int8", "--calibrate",
                 str(tmp_path / "missing.txt") + ":4"]) == 1
    assert "ARC1107" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["compress-report", str(export_copy), "--no-timing", "--data", "chars:2", "--seq", "100000",
                 "--max-memory", "1GB"]) == 1
    assert "ARC1306" in capsys.readouterr().err


def test_running_out_of_memory_beyond_the_estimate_is_arc1306(tmp_path, monkeypatch, capsys):
    """The estimates before the work cover the state, logits and activations, not every
    intermediate: an allocation failure after them is still a diagnostic, not an internal error."""
    from archc.backends.torch import train as train_mod

    def oom(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory: you tried "
                           "to allocate 10000000000 bytes.")

    monkeypatch.setattr(train_mod, "train", oom)
    spec = tmp_path / "t.arch"
    spec.write_text(SPEC)
    assert main(["train", str(spec), "--steps", "1", "-q", "-o", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "ARC1306" in err and "not enough memory" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_the_prune_api_writes_through_the_same_transaction(tmp_path):
    """`archc.prune` is the library the CLI wraps (not the CLI): the same folder, the same refusal."""
    import pytest

    import archc
    from archc.files import FileError

    spec = tmp_path / "t.arch"
    spec.write_text(SPEC)
    out = tmp_path / "o"
    path = archc.prune(str(spec), out=str(out), ffn=0.5)
    assert path == out.resolve() / "t-pruned.arch" and "hidden=16" in path.read_text()
    assert sorted(p.name for p in out.iterdir()) == ["prune.json", "t-pruned.arch", "weights.safetensors"]
    with pytest.raises(FileError, match="already holds"):
        archc.prune(str(spec), out=str(out), ffn=0.25)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        archc.prune(str(spec), out=str(out), ffn=1.5)
    assert archc.prune(str(spec), out=str(out), ffn=0.25, force=True).read_text().count("hidden=24") == 1
