"""Reading a Hugging Face `config.json` as a stranger wrote it, and the fields a family reads.

A config is untrusted input (CONVENTIONS.md): its size is capped, it must be one JSON object,
and every field that changes the model must be one archc expresses — a field it cannot is an
`ImportError_` naming the field and its value, never a silently different model. A family reads
its fields through `Fields`, which remembers what it read, so the importer can refuse what no
family rule looked at (`Fields.unread`) unless it is in `IGNORED`: fields that do not change the
function the weights compute (token ids, dtypes, dropout at inference, bookkeeping).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Largest config.json read (real ones are a few kB).
MAX_CONFIG_BYTES = 1 << 20

#: Fields that do not change what the weights compute: ids, dtypes, generation defaults,
#: bookkeeping, dropout (off at inference; training takes its own `dropout=` in the spec).
IGNORED = frozenset({
    "_name_or_path", "architectures", "auto_map", "bos_token_id", "eos_token_id", "pad_token_id",
    "torch_dtype", "dtype", "transformers_version", "model_type", "use_cache", "initializer_range",
    "attention_dropout", "hidden_dropout", "embd_pdrop", "resid_pdrop", "output_attentions",
    "output_hidden_states", "return_dict", "is_decoder", "id2label", "label2id", "tokenizer_class",
    "max_position_embeddings", "use_return_dict", "chunk_size_feed_forward",
    "problem_type", "prefix", "task_specific_params", "pruned_heads", "tf_legacy_loss",
    "torchscript", "use_bfloat16", "finetuning_task", "cross_attention_hidden_size", "add_cross_attention",
    "tie_encoder_decoder", "is_encoder_decoder", "decoder_start_token_id", "sep_token_id",
    "forced_bos_token_id", "forced_eos_token_id", "suppress_tokens", "begin_suppress_tokens",
    "bad_words_ids", "num_beams", "num_beam_groups", "diversity_penalty", "do_sample", "early_stopping",
    "length_penalty", "max_length", "min_length", "no_repeat_ngram_size", "num_return_sequences",
    "output_scores", "remove_invalid_values", "repetition_penalty", "return_dict_in_generate",
    "temperature", "top_k", "top_p", "typical_p", "encoder_no_repeat_ngram_size", "exponential_decay_length_penalty",
    "chunk_size", "pretraining_tp", "classifier_dropout",
})


class HFImportError(Exception):
    """What cannot be imported, for a diagnostic: the message names the field and its value."""

    def __init__(self, message: str, hint: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint
        self.field = field


def config_path(source: str | Path) -> Path:
    """`source`'s config.json: the file itself, or `config.json` in the folder."""
    path = Path(source)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise HFImportError(f"no config.json at {source}",
                            "pass a folder written by save_pretrained, or its config.json")
    return path


def read_json_object(path: Path, limit: int, what: str) -> dict[str, Any]:
    """One JSON object from `path`, read within `limit` bytes (a config, a checkpoint index)."""
    with path.open("rb") as f:
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise HFImportError(f"{path} is larger than {limit:,} bytes: not {what}")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HFImportError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise HFImportError(f"{path} holds a JSON {type(obj).__name__}, not an object")
    return obj


def read_config(source: str | Path) -> dict[str, Any]:
    """The config as a dict (a folder or its config.json), read within `MAX_CONFIG_BYTES`."""
    return read_json_object(config_path(source), MAX_CONFIG_BYTES, "a model config")


class Fields:
    """A config's fields as a family reads them; remembers which it read."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.read: set[str] = set()

    def __contains__(self, name: str) -> bool:
        return name in self.cfg

    def get(self, name: str, default: Any = None) -> Any:
        self.read.add(name)
        value = self.cfg.get(name, default)
        return default if value is None else value

    def int(self, name: str, default: int | None = None) -> int:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise HFImportError(f"`{name}` is {value!r}: a positive integer was expected", field=name)
        return value

    def number(self, name: str, default: float | None = None) -> float:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise HFImportError(f"`{name}` is {value!r}: a number was expected", field=name)
        return float(value)

    def flag(self, name: str, default: bool) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise HFImportError(f"`{name}` is {value!r}: true or false was expected", field=name)
        return value

    def only(self, name: str, allowed: tuple[Any, ...], default: Any, why: str = "") -> Any:
        """The field's value, which must be one of `allowed` (what archc expresses)."""
        value = self.get(name, default)
        if value not in allowed:
            shown = " or ".join(repr(a) for a in allowed)
            raise HFImportError(f"`{name}` is {value!r}; archc imports {shown}{why}", field=name)
        return value

    def unread(self) -> list[str]:
        """Fields present that no rule read and that are not known to leave the model alone."""
        return sorted(k for k in self.cfg if k not in self.read and k not in IGNORED)
