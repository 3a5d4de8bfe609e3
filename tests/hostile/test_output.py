"""The one way archc writes an output (`archc.files.output`), attacked directly: forced replaces,
planted links, empty paths, writers killed before and in the middle of a commit, a full disk.
These use the transaction itself (standard library only), so each case costs milliseconds; the
commands that use it are attacked in the other files of this folder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from archc.files import FileError
from archc.files import output as out_mod
from archc.files.output import TXN, Owned, output_file, output_folder, recover
from tests.hostile.conftest import snapshot

EXPORTISH = Owned(("model.onnx", "archc_export.json", "reference/model.onnx", "reference/archc_export.json"),
                  marker="archc_export.json", refuse="any", what="export")


def _write(txn, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = txn.stage / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def _old(folder: Path) -> None:
    """An existing export-like result plus the user's own files, in and beside it."""
    (folder / "reference").mkdir(parents=True)
    for rel in EXPORTISH.files:
        (folder / rel).write_text(f"old {rel}")
    (folder / "notes.txt").write_text("mine")
    (folder / "reference" / "mine.txt").write_text("mine too")
    (folder / "results").mkdir()
    (folder / "results" / "r.csv").write_text("1,2")


def test_a_new_folder_appears_whole_and_a_failure_leaves_nothing(tmp_path):
    target = tmp_path / "a" / "b" / "out"
    with pytest.raises(RuntimeError), output_folder(target, EXPORTISH) as txn:
        _write(txn, {"model.onnx": "new"})
        assert not target.exists()  # nothing visible until the commit
        raise RuntimeError("the export failed")
    assert not (tmp_path / "a").exists()  # not even the parents it made
    with output_folder(target, EXPORTISH) as txn:
        _write(txn, {"model.onnx": "new", "archc_export.json": "{}"})
    assert sorted(os.listdir(target)) == ["archc_export.json", "model.onnx"]
    assert [n for n in os.listdir(target.parent) if n != "out"] == []


def test_force_replaces_only_archcs_files(tmp_path):
    target = tmp_path / "out"
    _old(target)
    before = snapshot(tmp_path)
    with pytest.raises(FileError, match="not empty; refusing"), output_folder(target, EXPORTISH):
        pass
    assert snapshot(tmp_path) == before
    with output_folder(target, EXPORTISH, force=True) as txn:  # a new result without a reference
        _write(txn, {"model.onnx": "new", "archc_export.json": "new"})
    after = snapshot(tmp_path)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed == {"out/model.onnx", "out/archc_export.json", "out/reference/model.onnx",
                       "out/reference/archc_export.json"}
    assert (target / "reference" / "mine.txt").read_text() == "mine too"  # the folder stays: the user's file is in it
    assert (target / "notes.txt").read_text() == "mine" and (target / "results" / "r.csv").exists()
    assert not any(n.startswith(TXN) for n in os.listdir(target))


def test_an_own_folder_left_empty_is_removed(tmp_path):
    target = tmp_path / "out"
    _old(target)
    (target / "reference" / "mine.txt").unlink()
    with output_folder(target, EXPORTISH, force=True) as txn:
        _write(txn, {"model.onnx": "new", "archc_export.json": "new"})
    assert not (target / "reference").exists()


@pytest.mark.parametrize("planted", ["target", "model.onnx", "reference", ".archc_write_test", "model.onnx.tmp"])
def test_planted_links_are_never_written_through(tmp_path, planted):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = tmp_path / "out"
    _old(target)
    if planted == "target":
        shutil.rmtree(target)
        target.symlink_to(elsewhere)
    elif planted == "reference":
        shutil.rmtree(target / "reference")
        (target / "reference").symlink_to(elsewhere)
    else:
        (target / planted).unlink(missing_ok=True)
        (target / planted).symlink_to(victim)
    before = snapshot(tmp_path)
    if planted in ("target", "model.onnx", "reference"):
        with pytest.raises(FileError) as e, output_folder(target, EXPORTISH, force=True) as txn:
            _write(txn, {"model.onnx": "evil"})
        assert e.value.code == "ARC1302"
        assert snapshot(tmp_path) == before
    else:  # names archc no longer uses: left alone, links and their targets
        with output_folder(target, EXPORTISH, force=True) as txn:
            _write(txn, {"model.onnx": "new", "archc_export.json": "new"})
        assert victim.read_text() == "precious" and os.readlink(target / planted) == str(victim)


def test_an_empty_path_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.onnx").write_text("the user's")
    for path in ("", "  "):
        with pytest.raises(FileError) as e, output_folder(path, EXPORTISH, force=True):
            pass
        assert e.value.code == "ARC1301" and e.value.usage
    assert (tmp_path / "model.onnx").read_text() == "the user's"


class _Killed(BaseException):
    """Stands for SIGKILL inside one process: nothing after it runs, not even `finally` cleanup
    of the transaction (the lock is released as a dead process's is)."""


@pytest.mark.parametrize("moves", range(6))
def test_a_commit_cut_after_any_rename_is_finished_by_the_next_run(tmp_path, monkeypatch, moves):
    """Four old files out, two new ones in: cut after each of the renames, the folder holds old or
    new files (each whole), and the next writer or reader rolls the journal forward."""
    target = tmp_path / "out"
    _old(target)
    real_move, done = out_mod._move, []

    def move(*a):
        if len(done) == moves:
            raise _Killed
        done.append(a)
        real_move(*a)

    monkeypatch.setattr(out_mod, "_move", move)
    with pytest.raises(_Killed), output_folder(target, EXPORTISH, force=True) as txn:
        _write(txn, {"model.onnx": "new", "archc_export.json": "new"})
    monkeypatch.setattr(out_mod, "_move", real_move)
    for rel in ("model.onnx", "archc_export.json"):  # each file, if present, is whole
        assert not (target / rel).exists() or (target / rel).read_text() in (f"old {rel}", "new")
    recover(target, reader=True)
    assert (target / "model.onnx").read_text() == "new" and (target / "archc_export.json").read_text() == "new"
    assert not (target / "reference" / "model.onnx").exists()
    assert (target / "notes.txt").read_text() == "mine" and (target / "reference" / "mine.txt").exists()
    assert not any(n.startswith(TXN) for n in os.listdir(target))


_WRITER = textwrap.dedent("""
    import sys, tempfile, time
    from archc.files.output import Owned, output_folder, temp_files_in_transactions
    owned = Owned(("model.onnx", "archc_export.json"), marker="archc_export.json", refuse="any")
    with temp_files_in_transactions(), output_folder(sys.argv[1], owned, force=True) as txn:
        (txn.stage / "model.onnx").write_text("half")
        tempfile.mkdtemp()  # a library's temporary folder: it must land in the transaction
        print("ready", flush=True)
        time.sleep(60)
""")


def _start_writer(target: Path, systmp: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, **({"TMPDIR": str(systmp)} if systmp is not None else {})}
    p = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE, text=True,
                         cwd=Path(__file__).resolve().parents[2], env=env)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


@pytest.mark.parametrize("exists", [True, False])
def test_a_writer_killed_mid_work_is_cleaned_up_by_the_next_run(tmp_path, exists):
    target = tmp_path / "out"
    if exists:
        _old(target)
    systmp = tmp_path.parent / f"{tmp_path.name}-systmp"  # the writer's system temp dir: watched alone
    systmp.mkdir()
    before = snapshot(tmp_path)
    writer = _start_writer(target, systmp)
    with pytest.raises(FileError) as e, output_folder(target, EXPORTISH, force=True):
        pass
    assert e.value.code == "ARC1303"  # alive: another writer is refused, not cleaned away
    recover(target, reader=True)  # a reader goes on, touching nothing
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert os.listdir(systmp) == []  # nothing in the system temp dir
    leftovers = [n for n in os.listdir(target if exists else tmp_path) if TXN in n]
    assert leftovers and snapshot(tmp_path, skip=(target if exists else tmp_path) / leftovers[0]) == before
    with output_folder(target, EXPORTISH, force=True) as txn:  # the next run cleans up and is not blocked
        _write(txn, {"model.onnx": "new", "archc_export.json": "new"})
    assert (target / "model.onnx").read_text() == "new"
    assert not [n for n in os.listdir(target) if TXN in n] and not [n for n in os.listdir(tmp_path) if TXN in n]


def test_sigterm_and_sigint_discard_the_transaction(tmp_path):
    target = tmp_path / "out"
    _old(target)
    before = snapshot(tmp_path)
    for sig in (signal.SIGINT, signal.SIGTERM):
        writer = _start_writer(target)
        writer.send_signal(sig)
        assert writer.wait(timeout=30) != 0
        assert snapshot(tmp_path) == before  # the transaction removed itself: the old result, whole


def test_a_single_file_is_replaced_whole_or_not_at_all(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("old")
    with pytest.raises(FileError, match="already exists"), output_file(path):
        pass
    with pytest.raises(RuntimeError), output_file(path, force=True) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["report.json"]
    path.chmod(0o600)
    with output_file(path, force=True) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["report.json"]
    assert path.stat().st_mode & 0o777 == 0o600  # a replaced file keeps its permissions
    link = tmp_path / "link.json"
    link.symlink_to(path)
    with pytest.raises(FileError) as e, output_file(link, force=True):
        pass
    assert e.value.code == "ARC1302" and path.read_text() == "new"


def _can_mount_tmpfs() -> str | None:
    if shutil.which("unshare") is None:
        return "util-linux's unshare is not installed"
    r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    return None if r.returncode == 0 else f"no unprivileged user namespaces here: {r.stderr.decode().strip()}"


_FULL_DISK = textwrap.dedent("""
    import json, os, subprocess, sys
    disk = sys.argv[1]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", disk], check=True)
    from archc.files import FileError
    from archc.files.output import Owned, output_folder
    owned = Owned(("model.onnx", "archc_export.json"), marker="archc_export.json")
    target = os.path.join(disk, "out")
    os.mkdir(target)
    for name in ("model.onnx", "archc_export.json", "notes.txt"):
        open(os.path.join(target, name), "w").write("old " + name)
    result = {}
    for needed in (0, 10**6):  # a write that fills the disk, and one the free space refuses up front
        try:
            with output_folder(target, owned, force=True, needed_bytes=needed) as txn:
                (txn.stage / "archc_export.json").write_text("new")
                with open(txn.stage / "model.onnx", "wb") as f:
                    f.write(b"x" * 10**6)
            result[needed] = "written"
        except FileError as e:
            result[needed] = [e.code, e.message]
    files = {n: open(os.path.join(target, n)).read() for n in os.listdir(target)}
    print(json.dumps({"result": result, "files": files, "disk": os.listdir(disk)}))
""")


def test_a_full_disk_is_arc1102_and_changes_nothing(tmp_path):
    """A real full file system: a 256 kB tmpfs in a user namespace (unprivileged)."""
    import json

    reason = _can_mount_tmpfs()
    if reason:
        pytest.skip(f"cannot make a full disk: {reason}")
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-c", _FULL_DISK, str(disk)],
                       capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    for needed, res in got["result"].items():
        assert res[0] == "ARC1102" and ("no space left" in res[1] or "not enough space" in res[1]), (needed, res)
    assert "1.0 MB needed" in got["result"]["1000000"][1]
    assert got["files"] == {"model.onnx": "old model.onnx", "archc_export.json": "old archc_export.json",
                            "notes.txt": "old notes.txt"}
    assert got["disk"] == ["out"]


def test_a_commit_waits_for_a_reader_so_no_reader_sees_a_mix(tmp_path):
    """While archc reads a folder (`reading`: a shared lock) a commit into it waits; afterwards it
    goes through. A reader therefore sees all old files or all new ones."""
    from archc.files.output import reading

    target = tmp_path / "out"
    _old(target)
    script = textwrap.dedent("""
        import sys
        from archc.files.output import Owned, output_folder
        owned = Owned(("model.onnx", "archc_export.json"), marker="archc_export.json", refuse="any")
        with output_folder(sys.argv[1], owned, force=True) as txn:
            (txn.stage / "model.onnx").write_text("new")
            (txn.stage / "archc_export.json").write_text("new")
            print("built", flush=True)
    """)
    with reading(target):
        p = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[2])
        assert p.stdout is not None and p.stdout.readline().strip() == "built"
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(timeout=0.5)  # the commit waits for the reader
        assert (target / "model.onnx").read_text() == "old model.onnx"
    assert p.wait(timeout=30) == 0
    assert (target / "model.onnx").read_text() == "new" and (target / "archc_export.json").read_text() == "new"


def test_a_planted_transaction_folder_is_left_alone(tmp_path):
    """A folder named like a transaction, with a lock file and a journal archc did not write
    (paths out of the folder): recovery touches neither it nor anything the journal names."""
    target = tmp_path / "out"
    _old(target)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    planted = target / f"{TXN}evil"
    (planted / "new").mkdir(parents=True)
    (planted / ".archc-txn").write_text("1\n")
    for journal in ('{"own": ["../victim.txt"], "new": [], "marker": null}', "not json", '{"own": 3}'):
        (planted / "COMMIT").write_text(journal)
        before = snapshot(tmp_path)
        recover(target, reader=True)
        recover(target)
        assert snapshot(tmp_path) == before
    with output_folder(target, EXPORTISH, force=True) as txn:  # and it does not block a write
        _write(txn, {"model.onnx": "new", "archc_export.json": "new"})
    assert (target / "model.onnx").read_text() == "new" and victim.read_text() == "precious" and planted.is_dir()
