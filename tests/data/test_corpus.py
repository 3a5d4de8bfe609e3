"""Corpora: text, .jsonl and .parquet read through `datasets`, packed with end tokens, cached by
content, split at document ends; and the diagnostics for data archc cannot read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from archc.data import DataError
from archc.data import corpus as corpus_mod
from archc.data.corpus import CACHE, find_files, load_corpus
from archc.data.tokenizer import load_tokenizer
from tests.conftest import SAMPLE_TEXT

pytest.importorskip("datasets")

DOCS = [SAMPLE_TEXT, "A second document.\n", "東京 and café.", "the fox\n\nand the dog"]


def _folder(root: Path) -> Path:
    """DOCS[0] and DOCS[1] as .txt files, DOCS[2] and DOCS[3] as .jsonl and .parquet records, and
    a hidden folder that must be skipped."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = root / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_text(DOCS[0])
    (data / "sub" / "b.md").write_text(DOCS[1])
    (data / "c.jsonl").write_text(json.dumps({"body": DOCS[2], "id": 7}) + "\n")
    pq.write_table(pa.table({"body": [DOCS[3]], "n": [1]}), data / "d.parquet")
    (data / ".hidden").mkdir()
    (data / ".hidden" / "x.txt").write_text("never read")
    return data


def test_documents_are_packed_in_order_with_end_tokens_and_cached(bpe_folder: Path, tmp_path: Path):
    tok = load_tokenizer(bpe_folder)
    data = _folder(tmp_path)
    assert [f.name for f in find_files(data)] == ["a.txt", "c.jsonl", "d.parquet", "b.md"]
    c = load_corpus(data, tok, text_field="body")
    # text files first (sorted), then records: .txt/.md, .jsonl, .parquet
    order = [DOCS[0], DOCS[1], DOCS[2], DOCS[3]]
    expected = [t for d in order for t in [*tok.encode(d), tok.eos_id]]
    assert c.tokens.tolist() == expected and not c.cached
    assert c.doc_ends.tolist() == np.cumsum([len(tok.encode(d)) + 1 for d in order]).tolist()
    assert c.doc_bytes.tolist() == [len(d.encode()) for d in order] and c.n_bytes == sum(len(d.encode()) for d in order)
    again = load_corpus(data, tok, text_field="body")
    assert again.cached and again.tokens.tolist() == expected and again.doc_ends.tolist() == c.doc_ends.tolist()
    # another tokenizer, another text field, or one changed byte: a miss, never stale tokens
    assert not load_corpus(data, load_tokenizer("bytes"), text_field="body").cached
    (data / "a.txt").write_text(DOCS[0].replace("cat", "cow"))
    changed = load_corpus(data, tok, text_field="body")
    assert not changed.cached and changed.tokens.tolist() != expected


def test_a_long_document_in_pieces_tokenizes_as_a_whole(bpe_folder: Path, tmp_path: Path, monkeypatch):
    """Pieces start at a line that begins with a non-space character, where the byte-level
    pre-tokenizer splits anyway: the tokens are those of the whole text."""
    tok = load_tokenizer(bpe_folder)
    text = SAMPLE_TEXT * 20
    (tmp_path / "long.txt").write_text(text)
    monkeypatch.setattr(corpus_mod, "PIECE_CHARS", 100)
    pieces = list(corpus_mod._pieces(text))
    assert len(pieces) > 10 and "".join(pieces) == text
    c = load_corpus(tmp_path / "long.txt", tok, cache_dir=tmp_path / "cache")
    assert c.tokens.tolist() == [*tok.encode(text), tok.eos_id]


def test_the_held_out_split_is_at_a_document_end(tmp_path: Path):
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": f"doc {i} " * 10}) + "\n" for i in range(40)))
    c = load_corpus(tmp_path / "c.jsonl", load_tokenizer("bytes"))
    train, held = c.split(0.1)
    assert len(train) + len(held) == c.n_tokens and len(train) in c.doc_ends.tolist()
    assert 0.05 <= len(held) / c.n_tokens <= 0.2 and held[-1] == 256
    # one document: cut inside it
    (tmp_path / "one.txt").write_text("x" * 1000)
    one = load_corpus(tmp_path / "one.txt", load_tokenizer("bytes"))
    assert [len(p) for p in one.split(0.1)] == [901, 100]
    # bytes of a prefix: whole documents, the cut one pro rata
    assert c.bytes_of(c.n_tokens) == c.n_bytes
    first = int(c.doc_ends[0])
    assert c.bytes_of(first) == c.doc_bytes[0] and c.bytes_of(first // 2) == pytest.approx(c.doc_bytes[0] * (first // 2) / first)


def test_an_unwritable_cache_warns_and_still_reads(tmp_path: Path):
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "blocker").write_text("a file where the cache folder would go")
    logs: list[str] = []
    c = load_corpus(tmp_path / "a.txt", load_tokenizer("bytes"), cache_dir=tmp_path / "blocker", log=logs.append)
    assert c.tokens.tolist() == [*b"hello", 256] and "cannot cache" in logs[0]
    assert (tmp_path / "blocker").read_text().startswith("a file")


@pytest.mark.parametrize("case", ["missing", "empty_folder", "suffix", "no_field", "not_text", "bad_json", "surrogate"])
def test_data_archc_cannot_read_is_a_diagnostic(case: str, tmp_path: Path):
    path = tmp_path / "d.jsonl"
    if case == "missing":
        path = tmp_path / "nope"
    elif case == "empty_folder":
        path = tmp_path
        (tmp_path / "notes.csv").write_text("a,b")
    elif case == "suffix":
        path = tmp_path / "notes.csv"
        path.write_text("a,b")
    elif case == "no_field":
        path.write_text(json.dumps({"content": "x", "meta": 1}) + "\n")
    elif case == "not_text":
        path.write_text(json.dumps({"text": 5}) + "\n")
    elif case == "surrogate":
        path.write_text('{"text": "ok"}\n{"text": "a\\ud800b"}\n')
    else:
        path.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(DataError) as e:
        load_corpus(path, load_tokenizer("bytes"))
    code, words = {"missing": ("ARC1503", "does not exist"), "empty_folder": ("ARC1503", "holds no"),
                   "suffix": ("ARC1503", "not a file archc reads"), "no_field": ("ARC1504", "'content', 'meta'"),
                   "not_text": ("ARC1504", "not text"), "bad_json": ("ARC1503", "cannot read"),
                   "surrogate": ("ARC1503", "surrogate")}[case]
    assert e.value.code == code and words in e.value.message
    assert not (tmp_path / CACHE).exists()  # nothing is cached from data that was refused
