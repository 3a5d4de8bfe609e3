"""`archc_export.json`: what an exported folder holds, for `archc run` and for people.

It lists the graph's inputs and outputs with dtypes and shapes (symbols: `batch`, `seq`,
`past_seq` / `total_seq` — the tokens a growing KV cache holds before and after a step), every
state tensor with the input that
takes it, the output that returns it, the IR node and record state it is, and how a fresh state
starts; the vocabulary, the spec's name and the SHA-256 of its text. It imports neither torch
nor onnx: the runtime reads it with numpy and onnxruntime alone.

A folder is read as if a stranger had written it (`read_manifest`): the file is capped at
`MAX_BYTES` and must be UTF-8 JSON of this schema; every symbol in a shape is one of `SYMBOLS` (or `seq_<input>`);
the paths it names (`model`, `quantization.reference`) must stay inside the folder
(`archc.files.read.inside`); `runtime.OnnxModel` then checks it against the graph itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from archc.files import FileError
from archc.files.read import inside, printable, read_text

MANIFEST = "archc_export.json"
FORMAT = "archc-onnx/1"
#: a manifest larger than this is not one archc wrote (the largest, RMT's memory fill, is ~1 MB)
MAX_BYTES = 64 * 2**20
#: the symbolic dimensions a shape may name: what the exporter writes
SYMBOLS = ("batch", "seq", "past_seq", "total_seq")
#: the length of a model's other inputs (an encoder–decoder's `seq_tgt`): `seq_<input name>`
OTHER_SEQ = r"^seq_[A-Za-z_][A-Za-z0-9_]{0,63}$"
Dim = (Annotated[int, Field(ge=0, le=2**31)] | Literal["batch", "seq", "past_seq", "total_seq"]
       | Annotated[str, StringConstraints(pattern=OTHER_SEQ)])
#: the element types the exporter writes
DType = Literal["float32", "float64", "int64", "int8", "bool"]


class PortInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    dtype: DType
    shape: list[Dim]


class StateInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str
    output: str
    node: str
    state: str
    dtype: DType
    shape: list[Dim]
    #: the initial value: a number (zeros, or the stabilizers' −∞ stand-in), or the values of
    #: the parameter each sequence starts from (RMT's memory tokens), without the batch axis
    fill: float | list[Any]
    #: a KV cache (one row of keys or values per token): `--quantize-state int8` may store it in int8
    kv: bool = False
    #: the state tensor (its input name) this one holds the int8 scales of: one per row
    scale_of: str | None = None
    #: the order the graph keeps the declared state's axes in (after batch), where an operator
    #: wants another layout than the op's record (Mamba-2's SSM state for LinearAttention)
    axes: list[int] | None = None


class WeightPrecision(BaseModel):
    """What quantization did with one weight (all the nodes that read it decided alike)."""

    model_config = ConfigDict(extra="forbid")

    weight: str
    cls: str | None
    precision: str  # "int8", "int4" or "fp32"
    nodes: int
    why: str


class Quantization(BaseModel):
    """How the folder's model was quantized from its fp32 export (kept in `reference`)."""

    model_config = ConfigDict(extra="forbid")

    #: or none (only the state quantized)
    scheme: Literal["int8_dynamic", "int8_static", "int8_block", "int4", "none"]
    asked: str  # what the user asked for (int8 resolves to one of the int8 schemes)
    tool: str
    method: str | None = None  # calibration method of int8_static
    calibration: str | None = None
    block_size: int | None = None
    mixer_blind: bool = False
    overrides: dict[str, bool] = {}
    #: int8: the top-1 agreement with the fp32 export of each int8 scheme tried, on held-out sequences
    candidates: dict[str, float] = {}
    shared_tables: list[str] = []
    weights: list[WeightPrecision] = []
    #: the precision of the KV caches (`--quantize-state`): fp32, or int8 with one scale per row
    state: str = "fp32"
    #: the fp32 export this one was made from, relative to the folder (None: not kept)
    reference: str | None = "reference"


class Seq2SeqState(BaseModel):
    """One tensor of an encoder–decoder's decoder state (`past.<name>` in, `present.<name>` out):
    its dtype, shape after the batch (`max_len` the axis preallocated to the decode length) and
    initial value."""

    model_config = ConfigDict(extra="forbid")

    name: str
    dtype: DType
    shape: list[Annotated[int, Field(ge=0, le=2**31)] | Literal["max_len"]]
    fill: float


class Seq2Seq(BaseModel):
    """An encoder–decoder's generation graphs beside its forward graph (`seq2seq.py`)."""

    model_config = ConfigDict(extra="forbid")

    encoder: str = "encoder.onnx"
    decoder: str = "decoder.onnx"
    #: the encoder graph's outputs, which the decoder graph takes under the same names
    encoder_outputs: list[str]
    state: list[Seq2SeqState]
    #: the target's first token (T5's pad id)
    decoder_start_token_id: Annotated[int, Field(ge=0, le=2**31)] = 0


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["archc-onnx/1"] = FORMAT
    kind: Literal["decoder", "forward"]
    model: str = "model.onnx"
    spec: str
    spec_sha256: str
    opset: Annotated[int, Field(ge=1, le=99)]
    vocab: Annotated[int, Field(ge=1, le=2**31)]
    inputs: list[PortInfo]
    outputs: list[PortInfo]
    state: list[StateInfo] = []
    #: exported from these weights (a file name), or a seeded random init
    weights: str
    #: the optimization pipeline the exported graph went through (docs/passes.md)
    pipeline: Literal["O0", "O1", "O2"] = "O0"
    #: `ort`: onnxruntime's fused operators where they compute the op; `onnx`: standard operators
    target: Literal["ort", "onnx"] = "onnx"
    #: a decoder's `logits`: every position of the step's tokens (`all`), or the last only
    #: (`archc export --logits last`: generation, not perplexity)
    logits: Literal["all", "last"] = "all"
    #: where onnxruntime-genai can run the folder, and if not, why
    genai: str = ""
    #: set when the model is quantized (`archc export --quantize`)
    quantization: Quantization | None = None
    #: the tokenizer copied into the folder (`tokenizer.json`; None: token ids, or UTF-8 bytes for a
    #: vocabulary of 256 or more) and its end-of-text id, where `archc run` stops by default
    tokenizer: str | None = None
    eos_token_id: Annotated[int, Field(ge=0, le=2**31)] | None = None
    #: an encoder–decoder's encoder and decoder graphs, for `archc run` (fp32 exports)
    seq2seq: Seq2Seq | None = None

    def write(self, folder: Path) -> None:
        (folder / MANIFEST).write_text(json.dumps(self.model_dump(), indent=2) + "\n")


class NotAnExport(Exception):
    """A folder that is not an archc export, or a damaged or altered one: `code` ARC1104 (not an
    export), ARC1304 (a path in it leaves the folder), ARC1305 (the manifest and the graph disagree)."""

    def __init__(self, message: str, code: str = "ARC1104", hint: str | None = None) -> None:
        super().__init__(message)
        self.code, self.hint = code, hint


def read_manifest(folder: Path) -> Manifest:
    """The manifest of `folder`, read as if a stranger wrote it (the module docstring). An export
    interrupted by a kill in the middle of its commit is finished first (`archc.files.output`)."""
    from archc.files.output import recover

    recover(folder, reader=True)
    path = folder / MANIFEST
    if not path.is_file():
        raise NotAnExport(f"{printable(str(folder))} has no {MANIFEST}: it is not a folder written by `archc export`")
    try:
        text = read_text(path, MAX_BYTES, "manifest")
        manifest = Manifest.model_validate_json(text)
        inside(folder, manifest.model, "the manifest's `model`")
        if manifest.seq2seq is not None:
            inside(folder, manifest.seq2seq.encoder, "the manifest's `seq2seq.encoder`")
            inside(folder, manifest.seq2seq.decoder, "the manifest's `seq2seq.decoder`")
        q = manifest.quantization
        if q is not None and q.reference is not None:
            inside(folder, q.reference, "the manifest's `quantization.reference`")
    except FileError as e:
        raise NotAnExport(e.message, e.code, e.hint) from None
    except ValidationError as e:
        first = e.errors()[0]
        where = printable(".".join(map(str, first["loc"])))
        raise NotAnExport(f"{printable(str(path))} is not a valid archc export manifest: {where}: "
                          f"{printable(first['msg'])}") from None
    return manifest
