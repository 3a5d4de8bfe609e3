"""A user's text as one packed token stream: files found, read with the `datasets` library,
tokenized once (batched: the `tokenizers` library encodes in parallel), cached beside the data,
documents joined with the end-of-document token, and split into training and held-out parts.

Accepted (`find_files`): a text file, `.jsonl`/`.json` (one record per line, the text in
`text_field`), `.parquet` (a column `text_field`), or a folder of them (searched recursively,
hidden files and folders skipped). A `.txt` file is one document; a record is one document.

The cache (`<data>/.archc-cache/`, or `cache_dir`) is keyed by the tokenizer's fingerprint, the
text field and every file's path and content hash: any change to the data or the tokenizer is a
miss, never stale tokens. It is written transactionally (a temporary name, then a rename); where
the folder is read-only the corpus is tokenized without one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from archc.data import DataError, need
from archc.data.tokenizer import Tokenizer
from archc.files import FileError
from archc.files.read import printable

TEXT = (".txt", ".text", ".md")
JSON = (".jsonl", ".json")
PARQUET = (".parquet",)
CACHE = ".archc-cache"
#: the cache's layout; bump it when the stored arrays change meaning
FORMAT = "archc-tokens/1"
#: documents encoded per call to the tokenizer (its Rust core spreads one call over the cores)
BATCH_DOCS = 256
#: a document longer than this many characters is encoded in pieces that start at a line start
#: (a line that begins with a non-space character), so one long file also uses every core
PIECE_CHARS = 1 << 20


@dataclass
class Corpus:
    """Documents as one token stream, each followed by the end-of-document token."""

    tokens: np.ndarray  # [N] uint32
    doc_ends: np.ndarray  # [D] int64: the end (exclusive, after its end token) of each document
    doc_bytes: np.ndarray  # [D] int64: each document's UTF-8 bytes
    eos_id: int
    source: str
    files: list[str]
    #: read from the cache (no tokenizing), and the seconds it took either way
    cached: bool = False
    seconds: float = 0.0

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_bytes(self) -> int:
        return int(self.doc_bytes.sum())

    def bytes_of(self, n: int) -> float:
        """The UTF-8 bytes of the text the first `n` tokens cover (a document cut short counted
        pro rata by its tokens)."""
        i = int(np.searchsorted(self.doc_ends, n, side="right"))
        full = float(self.doc_bytes[:i].sum())
        if i >= len(self.doc_ends):
            return full
        start = int(self.doc_ends[i - 1]) if i else 0
        return full + float(self.doc_bytes[i]) * (n - start) / max(1, int(self.doc_ends[i]) - start)

    def split(self, fraction: float) -> tuple[np.ndarray, np.ndarray]:
        """(training, held-out) token streams: the held-out part is the stream's last `fraction`,
        cut at the nearest document end when one lies within a factor of two of it (so no
        document is in both), else mid-document."""
        n = self.n_tokens
        target = n - max(1, round(n * fraction))
        ends = self.doc_ends[:-1]  # the last end is the stream's end
        cut = target
        if len(ends):
            nearest = int(ends[np.abs(ends - target).argmin()])
            if n * fraction / 2 <= n - nearest <= n * fraction * 2:
                cut = nearest
        return self.tokens[:cut], self.tokens[cut:]


def find_files(path: str | Path) -> list[Path]:
    """The text files of `path` (a file, or a folder searched recursively), sorted (ARC1503)."""
    p = Path(path)
    shown = printable(str(path))
    if not p.exists():
        raise DataError("ARC1503", f"--data: {shown} does not exist",
                        "give a text file, a .jsonl or .parquet file, or a folder of them", usage=True)
    if p.is_file():
        if not p.name.endswith((*TEXT, *JSON, *PARQUET)):
            raise DataError("ARC1503", f"--data: {shown} is not a file archc reads as text",
                            f"rename it with one of {', '.join((*TEXT, *JSON, *PARQUET))}")
        return [p]
    found = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith((*TEXT, *JSON, *PARQUET))
                   and not any(part.startswith(".") for part in f.relative_to(p).parts))
    if not found:
        raise DataError("ARC1503", f"--data: {shown} holds no {', '.join((*TEXT, *JSON, *PARQUET))} files",
                        "point --data at a folder of text files (hidden folders are skipped)")
    return found


def load_corpus(path: str | Path, tokenizer: Tokenizer, text_field: str = "text", cache_dir: str | Path | None = None,
                progress: Callable[[int, int], None] | None = None, log: Callable[[str], None] | None = None) -> Corpus:
    """The corpus at `path` through `tokenizer`: from the cache when it holds this data with this
    tokenizer, else read, tokenized and cached. `progress(done, total)` counts characters."""
    t0 = time.perf_counter()
    files = find_files(path)
    root = Path(path) if Path(path).is_dir() else Path(path).parent
    key = _cache_key(files, root, tokenizer, text_field)
    cache = Path(cache_dir) if cache_dir is not None else root / CACHE
    names = [str(f.relative_to(root)) for f in files]
    hit = _read_cache(cache, key)
    if hit is not None:
        tokens, docs = hit
        return Corpus(tokens, docs[0], docs[1], tokenizer.eos_id, str(path), names, True, time.perf_counter() - t0)
    texts = _read_documents(files, text_field)
    tokens, ends, nbytes = _tokenize(texts, tokenizer, progress)
    if not len(ends):
        raise DataError("ARC1505", f"--data: {printable(str(path))} holds no text", "add documents")
    try:
        _write_cache(cache, key, tokens, np.stack((ends, nbytes)))
    except (OSError, FileError) as e:  # a read-only folder: the corpus works, only uncached
        why = e.message if isinstance(e, FileError) else e.strerror
        (log or (lambda m: print(m, file=sys.stderr)))(
            f"warning: cannot cache the tokens in {printable(str(cache))} ({why}); they are tokenized again "
            "next time (pass a writable --cache-dir)")
    return Corpus(tokens, ends, nbytes, tokenizer.eos_id, str(path), names, False, time.perf_counter() - t0)


# -- reading --------------------------------------------------------------------------------


def _read_documents(files: list[Path], text_field: str) -> list[str]:
    """Every document's text: `.txt` whole, one per record of `.jsonl`/`.parquet` (their
    `text_field`), in file order within each kind."""
    need("datasets")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local files only: never the hub
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    texts: list[str] = []
    with tempfile.TemporaryDirectory(prefix="archc-datasets-") as scratch:  # datasets' own Arrow cache
        for kind, group in (("text", [f for f in files if f.name.endswith(TEXT)]),
                            ("json", [f for f in files if f.name.endswith(JSON)]),
                            ("parquet", [f for f in files if f.name.endswith(PARQUET)])):
            if not group:
                continue
            paths = [str(f) for f in group]
            try:
                if kind == "text":
                    ds = datasets.Dataset.from_text(paths, sample_by="document", keep_linebreaks=True, cache_dir=scratch)
                    field = "text"
                elif kind == "json":
                    ds = datasets.Dataset.from_json(paths, cache_dir=scratch)
                    field = text_field
                else:
                    ds = datasets.Dataset.from_parquet(paths, cache_dir=scratch)
                    field = text_field
            except Exception as e:  # datasets' many parse errors: malformed JSON, not parquet, bad UTF-8
                cause = e.__cause__ or e
                raise DataError("ARC1503", f"--data: cannot read {_names(group)} as {kind}: "
                                f"{printable(str(cause)).splitlines()[0][:300] if str(cause) else type(cause).__name__}",
                                "fix or remove the file; .jsonl holds one JSON object per line") from None
            if field not in ds.column_names:
                raise DataError("ARC1504", f"--data: the records of {_names(group)} have no field {printable(field)!r} "
                                f"(they have {', '.join(map(repr, ds.column_names[:8])) or 'none'})",
                                "name the text's field with --text-field", usage=False)
            column = ds[field]
            for i, t in enumerate(column):
                if not isinstance(t, str):
                    raise DataError("ARC1504", f"--data: record {i} of {_names(group)} has {printable(field)!r} = "
                                    f"{printable(repr(t))[:60]}, not text",
                                    "every record's text field must be a string")
            texts.extend(column)
    return texts


def _names(group: list[Path]) -> str:
    return printable(str(group[0])) + (f" (and {len(group) - 1} more)" if len(group) > 1 else "")


# -- tokenizing -----------------------------------------------------------------------------


def _tokenize(texts: list[str], tokenizer: Tokenizer,
              progress: Callable[[int, int], None] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens with an end token after each document, each document's end, its UTF-8 bytes)."""
    total = sum(len(t) for t in texts)
    done = 0
    parts: list[np.ndarray] = []
    lengths = np.zeros(len(texts), np.int64)
    # the texts are valid Unicode: datasets decodes files strictly, Arrow strings are UTF-8
    nbytes = np.fromiter((len(t.encode("utf-8")) for t in texts), np.int64, len(texts))
    eos = np.array([tokenizer.eos_id], np.uint32)
    for batch in _batches(texts):
        encoded = tokenizer.encode_batch([piece for _, piece in batch])
        for (doc, piece), ids in zip(batch, encoded, strict=True):
            arr = np.frombuffer(ids, np.uint8).astype(np.uint32) if isinstance(ids, bytes) else np.asarray(ids, np.uint32)
            parts.append(arr)
            lengths[doc] += len(arr)
            done += len(piece)
        if progress is not None:
            progress(done, total)
    # one end token after each document: rebuild the stream with them in place
    stream = np.concatenate(parts) if parts else np.zeros(0, np.uint32)
    body_ends = np.cumsum(lengths)
    out = np.insert(stream, body_ends, eos[0]) if len(texts) else stream
    ends = body_ends + np.arange(1, len(texts) + 1)
    return out, ends.astype(np.int64), nbytes


def _batches(texts: list[str]) -> Iterator[list[tuple[int, str]]]:
    """Batches of (document index, piece): whole documents, long ones cut into pieces."""
    batch: list[tuple[int, str]] = []
    for i, text in enumerate(texts):
        for piece in _pieces(text):
            batch.append((i, piece))
            if len(batch) == BATCH_DOCS:
                yield batch
                batch = []
    if batch:
        yield batch


def _pieces(text: str) -> Iterator[str]:
    """`text` in pieces of about PIECE_CHARS, each cut just before a line that starts with a
    non-space character (where byte-level BPE's pre-tokenizer would split anyway); a text with
    no such line stays whole."""
    start = 0
    while len(text) - start > PIECE_CHARS:
        cut = start + PIECE_CHARS
        while True:
            cut = text.find("\n", cut)
            if cut < 0 or cut + 1 >= len(text) or not text[cut + 1].isspace():
                break
            cut += 1
        if cut < 0 or cut + 1 >= len(text):
            break
        yield text[start:cut + 1]
        start = cut + 1
    yield text[start:]


# -- the cache ------------------------------------------------------------------------------


def _cache_key(files: list[Path], root: Path, tokenizer: Tokenizer, text_field: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"format": FORMAT, "tokenizer": tokenizer.fingerprint, "eos": tokenizer.eos_id,
                         "field": text_field, "pieces": PIECE_CHARS}).encode())
    for f in files:
        h.update(str(f.relative_to(root)).encode() + b"\0")
        with open(f, "rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()[:32]


def _read_cache(cache: Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    tok, docs = cache / f"{key}.tokens.npy", cache / f"{key}.docs.npy"
    if cache.is_symlink() or not docs.is_file() or not tok.is_file():
        return None
    try:
        tokens = np.load(tok, mmap_mode="r", allow_pickle=False)
        d = np.load(docs, allow_pickle=False)
    except (OSError, ValueError):  # damaged: tokenize again (and replace it)
        return None
    if tokens.dtype != np.uint32 or d.ndim != 2 or d.shape[0] != 2 or (d.shape[1] and d[0, -1] != len(tokens)):
        return None
    return tokens, d.astype(np.int64)


def _write_cache(cache: Path, key: str, tokens: np.ndarray, docs: np.ndarray) -> None:
    """The tokens, then the document table (the marker a reader checks for), each written whole
    through archc's one write path (`output_file`: a temporary file renamed into place, never
    through a link)."""
    from archc.files.output import output_file

    if cache.is_symlink():
        raise FileError("ARC1302", f"{cache} is a symbolic link")
    for name, arr in ((f"{key}.tokens.npy", tokens), (f"{key}.docs.npy", docs)):
        with output_file(cache / name, force=True, flag="--cache-dir") as tmp, open(tmp, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
