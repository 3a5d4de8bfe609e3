"""Tokenizers: a Hugging Face folder read as transformers reads it, the byte vocabulary, the
streaming decoder, and the diagnostics for files that are not tokenizers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from archc.data import DataError
from archc.data.tokenizer import BYTES_EOS, check_vocab, load_tokenizer
from tests.conftest import SAMPLE_TEXT

pytest.importorskip("tokenizers")


def test_a_hugging_face_folder_encodes_as_transformers_does(bpe_folder: Path):
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(bpe_folder)
    tok = load_tokenizer(bpe_folder)
    assert tok.eos_id == ref.eos_token_id and tok.vocab_size == len(ref)
    for text in (SAMPLE_TEXT, "naïve 東京 fox", ""):
        ids = tok.encode(text)
        assert ids == ref(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == ref.decode(ids) == text
        assert [list(x) for x in tok.encode_batch([text, text])] == [ids, ids]
    assert {f.name for f in tok.files} == {"tokenizer.json", "tokenizer_config.json"}
    # the same file given directly: the same fingerprint (the cache key)
    assert load_tokenizer(bpe_folder / "tokenizer.json").fingerprint == tok.fingerprint


def test_streaming_decode_joins_to_the_whole_text(bpe_folder: Path):
    """Multi-byte characters split across tokens come out whole, once they are complete."""
    for tok in (load_tokenizer(bpe_folder), load_tokenizer("bytes")):
        ids = tok.encode(SAMPLE_TEXT)
        stream = tok.stream()
        assert "".join(stream.step(t) for t in ids) + stream.flush() == SAMPLE_TEXT


def test_the_byte_vocabulary():
    tok = load_tokenizer("bytes")
    assert (tok.vocab_size, tok.eos_id) == (257, BYTES_EOS)
    assert tok.encode("é") == list("é".encode())
    assert tok.decode([*"hé".encode(), BYTES_EOS]) == "hé"
    assert check_vocab(tok, 256) is not None and check_vocab(tok, 257) is None


def test_the_end_token_without_a_config_is_found_by_its_name(bpe_folder: Path, tmp_path: Path):
    (tmp_path / "tokenizer.json").write_bytes((bpe_folder / "tokenizer.json").read_bytes())
    assert load_tokenizer(tmp_path).eos_id == load_tokenizer(bpe_folder).eos_id
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "<nope>"}}))
    with pytest.raises(DataError, match="does not have") as e:
        load_tokenizer(tmp_path)
    assert e.value.code == "ARC1501"


@pytest.mark.parametrize("case", ["missing", "folder", "garbage", "binary", "no_eos"])
def test_what_is_not_a_tokenizer_is_a_diagnostic(case: str, tmp_path: Path):
    from tokenizers import Tokenizer, models

    path = tmp_path / "tokenizer.json"
    if case == "folder":
        path = tmp_path
    elif case == "garbage":
        path.write_text("{ not json")
    elif case == "binary":  # not UTF-8: the byte that is not, under the tokenizer's own code
        path.write_bytes(b'{"model": "\xd6"}')
    elif case == "no_eos":
        Tokenizer(models.WordLevel({"a": 0, "b": 1}, unk_token="a")).save(str(path))
    with pytest.raises(DataError) as e:
        load_tokenizer(path)
    assert e.value.code == "ARC1501"
    assert e.value.usage == (case == "missing")
    assert {"missing": "does not exist", "folder": "has no tokenizer.json", "garbage": "not a tokenizers file",
            "binary": "not UTF-8 text (byte 11", "no_eos": "no end-of-text token"}[case] in e.value.message
    assert e.value.hint
