"""Checkpoints as transactions: a run killed (SIGKILL) while it saves — writing the files, or in
the middle of swapping them in — resumes from its last complete step; Ctrl-C stops at the end of a
step, saves, and says how to resume; a damaged checkpoint is ARC1308, not an internal error."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from safetensors import safe_open

from archc.cli import main
from tests.hostile.conftest import ROOT, SPEC, assert_diagnostic, cli


def _step(run: Path) -> tuple[int, int]:
    """(the weights' step, the optimizer state's step) of a run folder."""
    steps = []
    for name in ("last.safetensors", "train_state.safetensors"):
        with safe_open(str(run / name), "pt") as f:
            steps.append(json.loads(f.metadata()["step"]))
    return steps[0], steps[1]


def _train(spec: Path, run: Path, *extra: str) -> int:
    return main(["train", str(spec), "--task", "copy", "--batch", "2", "--seq", "16", "-q", "-o", str(run), *extra])


#: a run of `archc train`, killed with SIGKILL at a chosen point of its final save
_KILLED = textwrap.dedent("""
    import os, signal, sys
    from archc.backends.torch import checkpoint, train
    from archc.files import output
    where, n = sys.argv[1], int(sys.argv[2])

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "writing":  # half of the optimizer state written into the transaction
        def save_train_state(path, *a, **k):
            open(path, "wb").write(b"\\x00" * 1000)
            die()
        train.save_train_state = save_train_state
    else:  # after n of the renames that swap the files in
        real, done = output._move, []
        def move(*a):
            if len(done) == n:
                die()
            done.append(a)
            real(*a)
        output._move = move
    from archc.cli import main
    main(sys.argv[3:])
""")


@pytest.mark.parametrize("where,n", [("writing", 0), ("swapping", 2)])
def test_a_kill_during_a_save_leaves_a_resumable_run(tmp_path, where, n):
    spec = tmp_path / "t.arch"
    spec.write_text(SPEC)
    run = tmp_path / "run"
    assert _train(spec, run, "--steps", "3") == 0
    (run / "notes.txt").write_text("the user's")
    argv = ["train", str(spec), "--task", "copy", "--batch", "2", "--seq", "16", "-q", "-o", str(run), "--resume",
            "--steps", "6"]
    r = subprocess.run([sys.executable, "-c", _KILLED, where, str(n), *argv], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr
    # whatever the kill left, the next run finishes or drops it and resumes from a complete step
    assert _train(spec, run, "--resume", "--steps", "6") == 0
    assert _step(run) == (6, 6)
    assert (run / "notes.txt").read_text() == "the user's"
    assert not [p for p in run.iterdir() if p.name.startswith(".archc-txn-")]
    with safe_open(str(run / "last.safetensors"), "pt") as f:
        assert len(json.loads(f.metadata()["losses"])) == 6


def test_ctrl_c_stops_at_the_step_boundary_saves_and_says_how_to_resume(tmp_path):
    spec = tmp_path / "t.arch"
    spec.write_text(SPEC)
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "archc", "train", str(spec), "--task", "copy", "--batch", "2", "--seq",
                          "16", "--steps", "100000", "-q", "-o", str(run)], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stderr is not None
    assert "training t" in p.stderr.readline()  # the loop has started
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in err, err
    assert "stopping at the end of this step" in err and "--resume" in err and "Continue with" in err
    weights, state = _step(run)
    assert weights == state and 1 <= weights < 100000
    assert (run / "loss.png").is_file()
    assert _train(spec, run, "--resume", "--steps", str(weights + 2)) == 0
    assert _step(run) == (weights + 2, weights + 2)


@pytest.mark.parametrize("damage", ["truncated-state", "truncated-weights", "steps-disagree", "other-spec"])
def test_a_damaged_checkpoint_is_arc1308(tmp_path, damage):
    spec = tmp_path / "t.arch"
    spec.write_text(SPEC)
    run = tmp_path / "run"
    assert _train(spec, run, "--steps", "2") == 0
    if damage.startswith("truncated"):
        f = run / ("train_state.safetensors" if damage == "truncated-state" else "last.safetensors")
        f.write_bytes(f.read_bytes()[:300])
    elif damage == "steps-disagree":
        other = tmp_path / "other"
        assert _train(spec, other, "--steps", "3") == 0
        (run / "train_state.safetensors").write_bytes((other / "train_state.safetensors").read_bytes())
    else:
        wider = tmp_path / "w.arch"
        wider.write_text(SPEC.replace("hidden=32", "hidden=48"))
        spec = wider
    r = cli("train", str(spec), "--task", "copy", "--batch", "2", "--seq", "16", "-q", "-o", str(run), "--resume",
            "--steps", "4")
    assert_diagnostic(r, 1, "ARC1308")
