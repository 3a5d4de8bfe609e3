"""Writing a result without losing anything: the one way every archc command writes a folder or a file.

A command builds its result in a *transaction*, a folder archc has just created (mode 0700, a
random name, so nothing in it can be a link someone planted) on the target's file system: inside
the target folder when it exists (`DIR/.archc-txn-XXXX/new/`), beside it when it does not
(`.DIR.archc-txn-XXXX/new/`). Nothing in the target changes until the result is complete; then:

* a new target: `new/` is renamed to the target, one atomic rename;
* an existing target: under an exclusive lock on the folder, a journal (`COMMIT`, listing the
  paths) is written and flushed, archc's own files of the old result are moved into the
  transaction's `old/` (the marker — the manifest — first), the new ones are moved in (the marker
  last), and the transaction folder is removed. SIGINT and SIGTERM are held back for these few
  renames and delivered after them.

`force` replaces exactly the paths a writer declares as its own (`Owned.files`): every other file
and folder in the target is left alone, and a declared folder (an export's `reference/`) is removed
only when nothing of the user's is left in it. A failure or an interrupt before the commit removes
the transaction and leaves the target as it was. A process killed with SIGKILL leaves its
transaction behind: the next archc that writes or reads the folder finds it (each transaction
holds an `flock` on its `.archc-txn` file while its process lives), finishes a committed one from
its journal and removes an uncommitted one — never blocking the run.

Links: archc never creates one, so the target itself and every own path in it must not be a
symbolic link (refused, ARC1302); moves go through directory descriptors opened with
`O_NOFOLLOW`, so a link planted while archc works is not followed either. The folders above the
target are the user's layout (a `runs/` linked to a larger disk is fine).

In the `archc` command (`temp_files_in_transactions()`, which the CLI turns on), Python's
`tempfile` — archc's and its libraries', onnxruntime's quantizer among them — writes into the open
transaction's `scratch/`, not the system temp dir: it is removed with the transaction, and a
SIGKILL's leftovers by the next run. `tempfile.tempdir` is process-wide, so the Python API leaves
it alone (another thread of the caller's may be using it); there, libraries' temporary folders go
to the system temp dir and are removed by their own context managers.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from archc.files import FileError

TXN = ".archc-txn-"  # the name of a transaction folder inside a target starts so
LOCK = ".archc-txn"  # inside a transaction folder: who owns it (pid), locked while it lives
JOURNAL = "COMMIT"
NEW, OLD, SCRATCH = "new", "old", "scratch"
_NOSPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@dataclass(frozen=True)
class Owned:
    """What a writer owns in its output folder: the only paths `force` replaces.

    files: relative POSIX paths (`reference/model.onnx` for one inside a declared sub-folder).
    marker: the file a reader looks for first (the manifest): moved out first, moved in last.
    refuse: without `force`, refuse when one of `files` exists (`own`) or when the folder holds
        anything at all (`any`: an export wants a folder of its own).
    what: what the result is called in messages.
    """

    files: tuple[str, ...]
    marker: str | None = None
    refuse: Literal["own", "any"] = "own"
    what: str = "output"

    def __post_init__(self) -> None:
        for f in self.files:
            _check_relative(f)


@dataclass
class Transaction:
    """An open transaction: write the result into `stage`; `scratch` is for temporary files."""

    target: Path
    root: Path
    stage: Path
    scratch: Path
    inside: bool  # the transaction folder is inside an existing target (else beside a new one)


def output_path(value: str | os.PathLike[str], flag: str = "-o") -> Path:
    """The absolute path of an output the user named; an empty one (an unset shell variable) is a
    usage error, never the current directory."""
    text = os.fspath(value)
    if not text.strip():
        raise FileError("ARC1301", f"{flag}: the output path is empty",
                        "name the output explicitly (an unset shell variable expands to nothing)", usage=True)
    return Path(os.path.abspath(text))


@contextlib.contextmanager
def output_folder(target: str | os.PathLike[str], owned: Owned, force: bool = False,
                  needed_bytes: int = 0) -> Iterator[Transaction]:
    """Open a transaction for the folder `target` (see the module docstring); commit it when the
    block ends normally, discard it when the block raises. The checks — the path, links, what
    exists, the free space for `needed_bytes` — run on entry, before the caller's long work."""
    path = output_path(target)
    created: list[Path] = []
    try:
        check_folder(path, owned, force)
        _check_space(path, needed_bytes)
        if not path.exists():
            created = _make_parents(path.parent)
        txn = _begin(path)
    except OSError as e:
        _remove_made(created)
        raise _write_error(path, e, needed_bytes) from None
    saved_tempdir = tempfile.tempdir
    if _TEMP_IN_TRANSACTIONS:
        tempfile.tempdir = str(txn.scratch)
    try:
        with sigterm_raises():
            yield txn
    except BaseException as e:
        _discard(txn.root)
        _remove_made(created)
        if _is_no_space(e) or (isinstance(e, OSError) and str(e.filename or "").startswith(str(txn.root))):
            raise _write_error(path, e, needed_bytes) from e
        raise
    finally:
        tempfile.tempdir = saved_tempdir
    try:
        _commit(txn, owned)
    except BaseException as e:
        _remove_made(created)
        if isinstance(e, OSError):
            raise _write_error(path, e, needed_bytes) from None
        raise


@contextlib.contextmanager
def output_file(target: str | os.PathLike[str], force: bool = False, flag: str = "-o") -> Iterator[Path]:
    """A single file written whole or not at all: the block writes the yielded temporary path
    (beside `target`, created exclusively by archc), which then replaces `target` with one rename.
    An existing target is refused unless `force`; a link or a folder is always refused."""
    path = check_file(target, force, flag)
    created: list[Path] = []
    tmp = path.parent / f".{path.name}{TXN}{secrets.token_hex(4)}"
    try:
        created = _make_parents(path.parent)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        _remove_made(created)
        raise _write_error(path, e, 0) from None
    fcntl.flock(fd, fcntl.LOCK_EX)  # alive: a later run leaves it alone until this process ends
    try:
        with contextlib.suppress(FileNotFoundError):  # a replaced file keeps its permissions
            os.fchmod(fd, os.stat(path).st_mode & 0o7777)
        yield tmp
        os.fsync(fd)
        with _signals_held():
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _remove_made(created)
        if _is_no_space(e) or (isinstance(e, OSError) and str(e.filename or "") in (str(tmp), str(path))):
            raise _write_error(path, e, 0) from e
        raise
    finally:
        os.close(fd)


def check_folder(target: str | os.PathLike[str], owned: Owned, force: bool = False) -> Path:
    """What `output_folder` checks on entry, for a command to run before its long work: leftovers
    of killed runs finished or removed, the path, links, what exists. Returns the absolute path."""
    path = output_path(target)
    try:
        recover(path)
        _check_target(path, owned, force)
    except OSError as e:
        raise _write_error(path, e, 0) from None
    return path


def check_file(target: str | os.PathLike[str], force: bool = False, flag: str = "-o") -> Path:
    """What `output_file` checks on entry, for a command to run before its long work."""
    path = output_path(target, flag)
    _clean_stale_files(path)
    if path.is_symlink():
        raise FileError("ARC1302", f"{path} is a symbolic link; archc does not write through links",
                        "remove the link or choose another output")
    if path.is_dir():
        raise FileError("ARC0903", f"{path} is a folder; refusing to replace it with a file", "choose a file name")
    if path.exists() and not force:
        raise FileError("ARC0903", f"{path} already exists; refusing to overwrite it",
                        "choose another output, or pass --force to replace it")
    return path


def write_text(path: Path, text: str) -> None:
    """Write a file inside a transaction's stage (a folder archc just made, so nothing of the
    user's is there to truncate), never through a link."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


# -- recovery ---------------------------------------------------------------------------------


def recover(path: Path, reader: bool = False) -> None:
    """Finish or remove the transactions of dead archc processes at `path` (inside it and beside
    it): a committed one is rolled forward from its journal, any other removed. A live one (its
    owner still holds the lock) is another archc writing now: a writer is refused (ARC1303), a
    reader goes on. A reader that may not write there leaves things as they are."""
    candidates: list[Path] = []
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            candidates += [path / n for n in os.listdir(path) if n.startswith(TXN)]
    with contextlib.suppress(OSError):
        prefix = f".{path.name}{TXN}"
        candidates += [path.parent / n for n in os.listdir(path.parent) if n.startswith(prefix)]
    for txn in candidates:
        try:
            _recover_one(path, txn, wait=not reader)
        except _Alive as alive:
            if not reader:
                raise FileError("ARC1303", f"another archc (process {alive.pid}) is writing {path} now",
                                "wait for it to finish, or choose another output") from None
        except OSError:
            if not reader:
                raise


@contextlib.contextmanager
def reading(path: Path) -> Iterator[None]:
    """Read the folder `path` as a whole: a killed writer's committed transaction is finished
    first, then a shared `flock` on the folder is held for the block, so a commit (which holds it
    exclusively for its renames) never happens while archc reads — a reader sees the old files or
    the new ones, never some of each. A folder that cannot be opened is read without the lock."""
    recover(path, reader=True)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


class _Alive(Exception):
    def __init__(self, pid: str) -> None:
        self.pid = pid


def _recover_one(target: Path, txn: Path, wait: bool = True) -> None:
    if txn.is_symlink():
        return
    if txn.is_file():  # a single file's temporary beside it (`output_file`)
        _remove_if_dead_file(txn)
        return
    if not (txn / LOCK).is_file() or (txn / LOCK).is_symlink():
        return  # not a transaction archc made: left alone
    fd = os.open(txn / LOCK, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _Alive(os.pread(fd, 32, 0).decode(errors="replace").strip() or "?") from None
        journal = txn / JOURNAL
        if txn.parent == target and journal.is_file() and not journal.is_symlink():
            try:
                plan = _read_journal(journal)
            except (ValueError, KeyError, TypeError):
                return  # a journal archc did not write: the folder is left alone, and so is the target
            with _locked_dir(target, wait) as tfd, _signals_held():
                if tfd is None:
                    return  # a reader, and the folder is being read or written: left for later
                _roll_forward(tfd, txn, plan)
        _discard(txn)
    finally:
        os.close(fd)


def _remove_if_dead_file(tmp: Path) -> None:
    fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(tmp)
    except BlockingIOError:
        pass  # another archc is writing it now
    finally:
        os.close(fd)


def _clean_stale_files(path: Path) -> None:
    prefix = f".{path.name}{TXN}"
    with contextlib.suppress(OSError):
        for n in os.listdir(path.parent):
            p = path.parent / n
            if n.startswith(prefix) and p.is_file() and not p.is_symlink():
                with contextlib.suppress(OSError):
                    _remove_if_dead_file(p)


# -- the transaction ------------------------------------------------------------------------


def _check_relative(rel: str) -> PurePosixPath:
    p = PurePosixPath(rel)
    if p.is_absolute() or not p.parts or any(part in ("", ".", "..") for part in p.parts) or "\0" in rel:
        raise ValueError(f"not a plain relative path: {rel!r}")
    return p


def _check_target(path: Path, owned: Owned, force: bool) -> None:
    if path.is_symlink():
        raise FileError("ARC1302", f"{path} is a symbolic link; archc does not write through links",
                        "give the real folder, or remove the link")
    if path.exists() and not path.is_dir():
        raise FileError("ARC0903", f"{path} exists and is not a folder", "choose another output folder")
    if not path.exists():
        return
    present = []
    for rel in owned.files:
        parts = PurePosixPath(rel).parts
        for i in range(1, len(parts) + 1):
            p = path.joinpath(*parts[:i])
            if p.is_symlink():
                raise FileError("ARC1302", f"{p} is a symbolic link where archc writes its {owned.what}; archc "
                                "does not write through links", "remove the link (archc never makes one)")
            if i == len(parts) and p.exists():
                if not p.is_file():
                    raise FileError("ARC0903", f"{p} is not a file archc wrote; refusing to replace it",
                                    "move it away, or choose another output folder")
                present.append(rel)
    if force:
        return
    entries = [n for n in os.listdir(path) if not n.startswith(TXN)]
    if owned.refuse == "any" and entries:
        raise FileError("ARC0903", f"{path} already exists and is not empty; refusing to overwrite it",
                        f"choose another output folder, or pass --force to replace archc's own files in it "
                        f"({', '.join(owned.files[:4])}{', …' if len(owned.files) > 4 else ''}) and leave the rest")
    if present:
        raise FileError("ARC0903", f"{path} already holds a {owned.what} ({', '.join(present)}); refusing to "
                        "overwrite it", "choose another output folder, or pass --force to replace it")


def _check_space(path: Path, needed: int) -> None:
    if needed <= 0:
        return
    free = _free_bytes(path)
    if free is not None and free < needed:
        raise FileError("ARC1102", f"not enough space for {path}: about {_mb(needed)} needed, {_mb(free)} free",
                        "free some space, or choose an output on another disk")


def _free_bytes(path: Path) -> int | None:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _make_parents(folder: Path) -> list[Path]:
    """mkdir -p `folder`; the folders it made, deepest first (removed again if the write fails)."""
    made = []
    p = folder
    while not p.exists():
        made.append(p)
        p = p.parent
    for d in reversed(made):
        os.mkdir(d)
    return made


def _remove_made(made: list[Path]) -> None:
    for d in made:
        with contextlib.suppress(OSError):
            os.rmdir(d)  # only when still empty


def _begin(path: Path) -> Transaction:
    inside = path.is_dir()
    token = secrets.token_hex(6)
    root = path / f"{TXN}{token}" if inside else path.parent / f".{path.name}{TXN}{token}"
    os.mkdir(root, 0o700)
    try:
        fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        _HELD[root] = fd
        fcntl.flock(fd, fcntl.LOCK_EX)  # held while this process lives: the transaction is alive
        os.write(fd, f"{os.getpid()}\n".encode())
        os.mkdir(root / NEW)
        os.mkdir(root / SCRATCH)
    except BaseException:
        _discard(root)
        raise
    return Transaction(path, root, root / NEW, root / SCRATCH, inside)


#: whether `tempfile` is pointed into open transactions (the CLI's process only)
_TEMP_IN_TRANSACTIONS = False


@contextlib.contextmanager
def temp_files_in_transactions() -> Iterator[None]:
    """For the block, every open transaction also holds Python's temporary files (the module
    docstring): for a process that is archc's alone, the `archc` command."""
    global _TEMP_IN_TRANSACTIONS
    saved, _TEMP_IN_TRANSACTIONS = _TEMP_IN_TRANSACTIONS, True
    try:
        yield
    finally:
        _TEMP_IN_TRANSACTIONS = saved


#: lock descriptors of this process's open transactions
_HELD: dict[Path, int] = {}


def _discard(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)  # rmtree never follows links
    fd = _HELD.pop(root, None)
    if fd is not None:
        os.close(fd)


def _commit(txn: Transaction, owned: Owned) -> None:
    """Until the journal is written a failure or an interrupt discards the transaction (the
    target is as it was); from then on, SIGINT/SIGTERM are held, and a failure leaves the
    transaction for the next run to finish (the target holds old or new files, each whole, and
    the journal says which)."""
    try:
        new = sorted(p.relative_to(txn.stage).as_posix() for p in txn.stage.rglob("*") if not p.is_dir())
        stray = sorted(set(new) - set(owned.files))
        if stray:  # a writer wrote a path it did not declare: a bug in archc; nothing is committed
            raise RuntimeError(f"the output of {txn.target} holds undeclared files: {stray}")
        for rel in new:
            _fsync_file(txn.stage / rel)
        if not txn.inside:
            with _signals_held():
                os.rename(txn.stage, txn.target)
            _fsync_dir(txn.target.parent)
            _discard(txn.root)
            return
        plan = {"own": list(owned.files), "new": new, "marker": owned.marker}
        with _locked_dir(txn.target) as tfd:  # waits for readers (`reading`) to finish
            assert tfd is not None
            with _signals_held():
                _write_journal(txn.root, plan)
                try:
                    _roll_forward(tfd, txn.root, plan)
                except BaseException:
                    os.close(_HELD.pop(txn.root))  # unlocked: the next run rolls it forward
                    raise
    except BaseException:
        if txn.root in _HELD:  # the journal was not written: nothing of the target changed
            _discard(txn.root)
        raise
    _fsync_dir(txn.target)
    _discard(txn.root)


def _write_journal(root: Path, plan: dict) -> None:
    fd = os.open(root / JOURNAL, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(plan).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(root)


def _read_journal(journal: Path) -> dict:
    plan = json.loads(journal.read_text())
    own, new, marker = plan["own"], plan["new"], plan.get("marker")
    for rel in (*own, *new):
        _check_relative(rel)
    if not set(new) <= set(own) or (marker is not None and marker not in own):
        raise ValueError(f"{journal}: a journal archc did not write")
    return {"own": own, "new": new, "marker": marker}


def _roll_forward(tfd: int, root: Path, plan: dict) -> None:
    """Move the old own files out and the new ones in; every step checks what is where, so a rerun
    after a kill at any point finishes the same way."""
    own, new, marker = plan["own"], set(plan["new"]), plan["marker"]
    rfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        out_order = sorted(own, key=lambda r: r != marker)  # the marker first
        for rel in out_order:
            staged = _lexists(rfd, f"{NEW}/{rel}")
            if _lexists(tfd, rel) and (rel not in new or staged):
                _move(tfd, rel, rfd, f"{OLD}/{rel}")
        for rel in sorted(new, key=lambda r: r == marker):  # the marker last
            if _lexists(rfd, f"{NEW}/{rel}"):
                _move(rfd, f"{NEW}/{rel}", tfd, rel)
        for folder in sorted({str(PurePosixPath(r).parent) for r in own} - {"."}, key=len, reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(folder, dir_fd=tfd)  # a declared sub-folder left empty: only then
    finally:
        os.close(rfd)


def _lexists(dfd: int, rel: str) -> bool:
    parts = PurePosixPath(rel).parts
    try:
        pfd = _open_dir(dfd, parts[:-1], create=False)
    except OSError:
        return False
    try:
        os.stat(parts[-1], dir_fd=pfd, follow_symlinks=False)
        return True
    except OSError:
        return False
    finally:
        if pfd != dfd:
            os.close(pfd)


def _move(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    sp, dp = PurePosixPath(src).parts, PurePosixPath(dst).parts
    sdir = _open_dir(src_fd, sp[:-1], create=False)
    ddir = _open_dir(dst_fd, dp[:-1], create=True)
    try:
        os.rename(sp[-1], dp[-1], src_dir_fd=sdir, dst_dir_fd=ddir)
    finally:
        for d, base in ((sdir, src_fd), (ddir, dst_fd)):
            if d != base:
                os.close(d)


def _open_dir(dfd: int, parts: tuple[str, ...], create: bool) -> int:
    """A descriptor of the folder `parts` below `dfd`, each step opened with O_NOFOLLOW (a link
    is an error, never followed); missing folders made when `create`."""
    fd = dfd
    for part in parts:
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, dir_fd=fd)
        nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        if fd != dfd:
            os.close(fd)
        fd = nxt
    return fd


@contextlib.contextmanager
def _locked_dir(path: Path, wait: bool = True) -> Iterator[int | None]:
    """An exclusive flock on the folder itself: one commit or recovery at a time, none while a
    reader holds it shared (`reading`). Without `wait`, None when it is taken."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield None
            return
        yield fd
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done, then are delivered (Python runs signal
    handlers in the main thread only; from another thread the block simply runs)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    sigs = (signal.SIGINT, signal.SIGTERM)
    saved = {s: signal.signal(s, lambda n, _f: got.append(n)) for s in sigs}
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        for s in got:
            signal.raise_signal(s)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that the same cleanup runs."""

    signum = signal.SIGTERM


def _raise_terminated(_signum: int, _frame: object) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM raises `Terminated` in the block instead of ending the process on the spot (its
    default), so that an output being written is discarded; a handler someone else installed
    stays. Main thread only (where Python runs signal handlers)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


# -- errors -----------------------------------------------------------------------------------


def _is_no_space(e: BaseException) -> bool:
    """OSError ENOSPC/EDQUOT/EFBIG, or a library's wrapping of it (safetensors' Rust IoError)."""
    if isinstance(e, OSError):
        return e.errno in _NOSPACE
    text = str(e)
    return "No space left on device" in text or "StorageFull" in text or "File too large" in text


def _write_error(path: Path, e: BaseException, needed: int) -> FileError:
    if _is_no_space(e):
        free = _free_bytes(path)
        figure = (f" (about {_mb(needed)} needed" + (f", {_mb(free)} free" if free is not None else "") + ")"
                  if needed else (f" ({_mb(free)} free)" if free is not None else ""))
        return FileError("ARC1102", f"cannot write {path}: no space left on the device{figure}; nothing was "
                         "changed", "free some space, or choose an output on another disk")
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    return FileError("ARC1102", f"cannot write {path}: {reason}; nothing was changed",
                     "choose an output you can write to (and a path whose folders are folders)")
