"""Reading back a folder archc wrote, as if a stranger had written it: every path a file names is
confined to the folder, every file is capped in size, text is decoded with a diagnostic, and
strings shown to the user have their control characters escaped.

The containment rule is ONNX's for external data (onnx/onnx#7717's docs/security.md): a path is
relative, has no `..`, and no link on the way from the folder to the file; it is checked before
anything is opened. The folder itself may be reached through links: it is the path the user gave.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path, PurePosixPath

from archc.files import FileError


def printable(text: str) -> str:
    """`text` with control and format characters (newlines, escape sequences, bidi overrides)
    escaped, so that a string from a file cannot rewrite the user's terminal."""
    out = []
    for ch in text:
        if unicodedata.category(ch)[0] == "C" or ch in "\u2028\u2029":
            out.append(ch.encode("unicode_escape", "backslashreplace").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def inside(folder: Path, rel: str, what: str) -> Path:
    """`folder/rel`, after checking that `rel` (a path a file in `folder` names) stays inside it:
    relative, no `..`, no backslash, no link on the way. `what` names the field in messages."""
    shown = printable(rel)
    p = PurePosixPath(rel)
    if (not rel or p.is_absolute() or "\\" in rel or "\0" in rel
            or any(part == ".." for part in p.parts) or (len(rel) > 1 and rel[1] == ":")):
        raise FileError("ARC1304", f"{what} is {shown!r}, which leaves {printable(str(folder))}",
                        "an archc folder names only files inside itself; this one was edited or made by "
                        "something else: export it again")
    cur = folder
    for part in p.parts:
        if part == ".":
            continue
        cur = cur / part
        if cur.is_symlink():
            raise FileError("ARC1304", f"{what} {shown!r}: {printable(str(cur))} is a symbolic link; archc does "
                            "not read through links out of a folder it wrote",
                            "replace the link with the file itself, or export again")
    real, target = folder.resolve(), cur.resolve()
    if target != real and not target.is_relative_to(real):
        raise FileError("ARC1304", f"{what} {shown!r} leaves {printable(str(folder))}", "export again")
    return cur


def read_text(path: Path, limit: int, what: str, code: str = "ARC1104", hint: str | None = None) -> str:
    """The UTF-8 text of `path`, refused when larger than `limit` bytes, never through a link.
    `code` and `hint` are the diagnostic's for a file that is not what it should be (ARC1104, a
    manifest archc wrote, by default; a tokenizer's is ARC1501)."""
    hint = hint or f"this is not a {what} archc wrote"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == 40:  # ELOOP: the last component is a link
            raise FileError("ARC1304", f"{printable(str(path))} is a symbolic link; archc does not read "
                            f"the {what} through links", "replace the link with the file itself") from None
        raise FileError(code, f"cannot read {printable(str(path))}: {e.strerror}",
                        f"check the {what}'s path and permissions") from None
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise FileError(code, f"{printable(str(path))} is {size:,} bytes; a {what} is at most {limit:,}", hint)
        data = f.read(limit + 1)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FileError(code, f"{printable(str(path))} is not UTF-8 text (byte {e.start:,}: "
                        f"{data[e.start:e.start + 1]!r})", hint) from None
