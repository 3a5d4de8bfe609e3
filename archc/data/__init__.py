"""Users' own text: tokenizers (`tokenizer.py`) and corpora read, tokenized, cached and packed
(`corpus.py`) for `archc train --data`, `archc eval`, `generate`, `export` and `run`.

Torch-free (numpy, the `tokenizers` and `datasets` libraries, imported lazily): `archc run` decodes
through the same tokenizer without PyTorch.
"""

from __future__ import annotations

from archc.files import FileError


class DataError(FileError):
    """A tokenizer or a corpus archc cannot use: code ARC1501 (the tokenizer), ARC1502 (its
    vocabulary against the spec's), ARC1503 (the data path), ARC1504 (a record's text field),
    ARC1505 (too little text for the request)."""


def need(module: str, extra: str = "data") -> None:
    """Import `module` or raise the diagnostic that says which extra installs it."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise FileError("ARC0904", f"reading text needs the `{module}` library, which is not installed",
                        f'install the {extra} extra: pip install "archc[{extra}]"') from None
