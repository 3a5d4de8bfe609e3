"""Files and folders archc writes and reads on a user's disk, with nothing lost and nothing outside.

`output.py` is the one way every command writes a result (a transaction committed by renames);
`read.py` is the one way a folder archc wrote is read back (paths confined to the folder, sizes
capped, text decoded with a diagnostic). Standard library only: every stage may use them.
"""

from __future__ import annotations


class FileError(Exception):
    """A problem with a path the user gave or a file archc reads or writes: a diagnostic code,
    a message, a hint; `usage` when the path itself is malformed (exit status 2, not 1)."""

    def __init__(self, code: str, message: str, hint: str | None = None, usage: bool = False) -> None:
        super().__init__(message)
        self.code, self.message, self.hint, self.usage = code, message, hint, usage
