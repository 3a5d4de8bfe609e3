"""The tokenizer a command speaks text through: a Hugging Face `tokenizer.json` (the `tokenizers`
library, which every `PreTrainedTokenizerFast` saves and onnxruntime-genai reads), or `bytes`.

`bytes` is archc's byte vocabulary: ids 0–255 are the UTF-8 bytes, and id 256 ends a document
(so a spec trained on text with it needs `vocab ≥ 257`). The end-of-document token of a
`tokenizer.json` is the `eos_token` its folder's `tokenizer_config.json` names, else the first
special token with a conventional end-of-text name (`<|endoftext|>`, `</s>`, `<eos>`, …).

Every tokenizer has a `fingerprint` (the sha256 of its definition): the token cache of a corpus is
keyed by it, so changing the tokenizer never reads stale tokens.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from archc.data import DataError, need
from archc.files.read import printable, read_text

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
#: the files of a Hugging Face tokenizer folder that travel with a model (copied into run and
#: export folders when present; only `tokenizer.json` is required)
COMPANIONS = ("tokenizer_config.json", "special_tokens_map.json")
#: end-of-text tokens by convention, in the order they are tried when no config names one
EOS_NAMES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>", "[EOS]", "<|im_end|>", "[SEP]")
#: a tokenizer.json larger than this is refused (Qwen2's is 7 MB, Gemma's 34 MB)
MAX_TOKENIZER_BYTES = 256 * 2**20
NOT_A_TOKENIZER = "give a tokenizer.json saved by `tokenizers` (tokenizer.save) or transformers (save_pretrained)"
BYTES_EOS = 256


class Stream(Protocol):
    def step(self, token: int) -> str:
        """The text that `token` completes (empty while a multi-byte character is incomplete)."""

    def flush(self) -> str:
        """What is left at the end."""


@dataclass
class ByteTokenizer:
    """UTF-8 bytes as ids 0–255, 256 the end of a document."""

    name: str = "bytes"
    vocab_size: int = BYTES_EOS + 1
    eos_id: int = BYTES_EOS
    fingerprint: str = "bytes/1"
    #: files to copy beside a model (none: the byte vocabulary needs no file)
    files: tuple[Path, ...] = ()

    def encode_batch(self, texts: Sequence[str]) -> list[Sequence[int]]:
        return [t.encode("utf-8") for t in texts]

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(t for t in ids if t < 256).decode("utf-8", "replace")

    def stream(self) -> Stream:
        return _ByteStream()


class _ByteStream:
    def __init__(self) -> None:
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def step(self, token: int) -> str:
        return self._dec.decode(bytes([token]) if token < 256 else b"")

    def flush(self) -> str:
        return self._dec.decode(b"", final=True)


@dataclass
class HFTokenizer:
    """A `tokenizer.json`, through the `tokenizers` library (batched encoding runs in parallel in
    its Rust core)."""

    name: str
    tok: Any = field(repr=False)
    vocab_size: int
    eos_id: int
    fingerprint: str
    files: tuple[Path, ...]

    def encode_batch(self, texts: Sequence[str]) -> list[Sequence[int]]:
        # no offsets, no special tokens added around each document: the packer adds the
        # end-of-document token itself
        return [e.ids for e in self.tok.encode_batch_fast(list(texts), add_special_tokens=False)]

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=False)

    def stream(self) -> Stream:
        from tokenizers.decoders import DecodeStream

        return _HFStream(self.tok, DecodeStream(skip_special_tokens=False))


class _HFStream:
    def __init__(self, tok: Any, stream: Any) -> None:
        self._tok, self._stream = tok, stream

    def step(self, token: int) -> str:
        return self._stream.step(self._tok, token) or ""

    def flush(self) -> str:
        return ""


Tokenizer = ByteTokenizer | HFTokenizer


def load_tokenizer(source: str | Path) -> Tokenizer:
    """`bytes`, a `tokenizer.json`, or a folder holding one (ARC1501 otherwise)."""
    if str(source) == "bytes":
        return ByteTokenizer()
    path = Path(source)
    folder = path if path.is_dir() else path.parent
    file = path / TOKENIZER_FILE if path.is_dir() else path
    shown = printable(str(source))
    if not file.is_file():
        where = f"{shown} has no {TOKENIZER_FILE}" if path.is_dir() else f"{shown} does not exist"
        raise DataError("ARC1501", f"--tokenizer: {where}",
                        "give a tokenizer.json, a folder with one (a Hugging Face model folder), or `bytes`",
                        usage=not path.exists())
    need("tokenizers")
    from tokenizers import Tokenizer as RustTokenizer

    text = _read(file, MAX_TOKENIZER_BYTES, "--tokenizer")
    try:
        tok = RustTokenizer.from_str(text)
    except Exception as e:  # the library's own parse errors: the file is not a tokenizer
        raise DataError("ARC1501", f"--tokenizer: {shown} is not a tokenizers file: {printable(str(e))[:200]}",
                        NOT_A_TOKENIZER) from None
    files = (file, *(folder / c for c in COMPANIONS if (folder / c).is_file() and file.name == TOKENIZER_FILE))
    eos = _eos_id(tok, folder if file.name == TOKENIZER_FILE else None, shown)
    return HFTokenizer(name=str(source), tok=tok, vocab_size=tok.get_vocab_size(with_added_tokens=True), eos_id=eos,
                       fingerprint=hashlib.sha256(text.encode()).hexdigest(), files=files)


def _eos_id(tok: Any, folder: Path | None, shown: str) -> int:
    named = _config_eos(folder) if folder is not None else None
    if named is not None:
        tid = tok.token_to_id(named)
        if tid is None:
            raise DataError("ARC1501", f"--tokenizer: {CONFIG_FILE} names eos_token {printable(named)!r}, which "
                            f"{TOKENIZER_FILE} does not have", "fix eos_token in tokenizer_config.json")
        return tid
    for name in EOS_NAMES:
        tid = tok.token_to_id(name)
        if tid is not None:
            return tid
    raise DataError("ARC1501", f"--tokenizer: {shown} has no end-of-text token (none named in {CONFIG_FILE}, "
                    f"none of {', '.join(EOS_NAMES[:4])}, …)",
                    "documents are packed with an end-of-document token between them: add one "
                    "(tokenizer.add_special_tokens) and name it eos_token in tokenizer_config.json")


def _read(path: Path, limit: int, what: str) -> str:
    """A tokenizer's file as text; what is not (too large, not UTF-8, a link) is a `DataError`."""
    from archc.files import FileError

    try:
        return read_text(path, limit, what, code="ARC1501", hint=NOT_A_TOKENIZER)
    except FileError as e:
        raise DataError(e.code, e.message, e.hint) from None


def _config_eos(folder: Path) -> str | None:
    path = folder / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        cfg = json.loads(_read(path, 64 * 2**20, CONFIG_FILE))
    except json.JSONDecodeError as e:
        raise DataError("ARC1501", f"--tokenizer: {printable(str(path))} is not JSON: {e}", NOT_A_TOKENIZER) from None
    eos = cfg.get("eos_token") if isinstance(cfg, dict) else None
    if isinstance(eos, dict):
        eos = eos.get("content")
    return eos if isinstance(eos, str) and eos else None


def write_tokenizer_files(tokenizer: Tokenizer, folder: Path) -> bool:
    """Copy a `tokenizer.json` tokenizer into `folder` (a transaction's stage: the caller commits
    it): `tokenizer.json` and its folder's companions, and a `tokenizer_config.json` naming the
    class and the end token when it has none (transformers' `AutoTokenizer` and onnxruntime-genai
    read them there). False for the byte vocabulary, which needs no file."""
    import shutil

    from archc.files.output import write_text

    if not tokenizer.files:
        return False
    shutil.copyfile(tokenizer.files[0], folder / TOKENIZER_FILE)
    for f in tokenizer.files[1:]:
        shutil.copyfile(f, folder / f.name)
    if not (folder / CONFIG_FILE).exists():
        eos = tokenizer.tok.id_to_token(tokenizer.eos_id)  # type: ignore[union-attr]
        write_text(folder / CONFIG_FILE, json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eos,
                                                     "model_max_length": 1 << 30}, indent=2) + "\n")
    return True


def check_vocab(tokenizer: Tokenizer, vocab: int) -> str | None:
    """None when the spec's `vocab` holds every id of the tokenizer, else what is wrong (the
    caller points at the spec line). A larger spec vocabulary is fine: Hugging Face models pad
    theirs to a multiple of 64 or 128 (Qwen2: 151,936 rows for 151,646 tokens)."""
    if tokenizer.vocab_size <= vocab:
        return None
    return (f"the tokenizer {printable(tokenizer.name)} has {tokenizer.vocab_size:,} tokens, the spec's vocabulary "
            f"{vocab:,}")
