"""The files a distributed train state owns in a run folder: a save replaces every rank file of
an earlier run (of any world size) and leaves a user's own files alone; a one-process save removes
a distributed state instead of leaving it stale beside its own."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")


def test_a_save_owns_the_rank_files_of_any_earlier_run(tmp_path):
    from archc.backends.torch.distributed_checkpoint import STATE_DIR, state_files, with_state_files
    from archc.backends.torch.train import CHECKPOINT

    folder = tmp_path / STATE_DIR
    folder.mkdir()
    for name in (".metadata", "__0_0.distcp", "__1_0.distcp", "__2_0.distcp", "__3_0.distcp", "notes.txt"):
        (folder / name).write_text("x")
    assert state_files(tmp_path, 2) == tuple(f"{STATE_DIR}/{n}" for n in
                                             (".metadata", "__0_0.distcp", "__1_0.distcp", "__2_0.distcp",
                                              "__3_0.distcp"))
    assert state_files(tmp_path / "new", 2) == (f"{STATE_DIR}/.metadata", f"{STATE_DIR}/__0_0.distcp",
                                                f"{STATE_DIR}/__1_0.distcp")
    owned = with_state_files(CHECKPOINT, tmp_path)
    assert set(CHECKPOINT.files) < set(owned.files) and owned.marker == CHECKPOINT.marker
    assert f"{STATE_DIR}/notes.txt" not in owned.files


def test_a_one_process_save_replaces_a_distributed_state(tmp_path):
    import torch

    from archc.backends.torch.distributed_checkpoint import STATE_DIR
    from archc.backends.torch.train import TrainConfig, _save

    folder = tmp_path / STATE_DIR
    folder.mkdir()
    (folder / ".metadata").write_text("x")
    (folder / "__0_0.distcp").write_text("x")
    (folder / "mine.txt").write_text("keep")
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    _save(model, opt, 1, torch.Generator(), TrainConfig(), tmp_path, [1.0], "spec", [])
    assert (tmp_path / "train_state.safetensors").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["mine.txt"]
