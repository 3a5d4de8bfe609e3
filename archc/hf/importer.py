"""`archc import-hf`: a Hugging Face checkpoint folder → an archc spec and its weights.

The config becomes a spec through its family's rule (`families.py`); the weights are renamed
to archc's state-dict keys tensor by tensor from the safetensors files (one file, or shards
with `model.safetensors.index.json`), each read once through `safe_open`, so the import holds
one copy of the weights at most. Before anything is written the name map is checked against
the spec's declared weights both ways: every declared weight has a checkpoint tensor of its
shape, and every checkpoint tensor is a declared weight (or a known non-weight, a rotary
`inv_freq` buffer) — a tensor archc would drop would be a different model. Pickled
checkpoints (`pytorch_model.bin`) are refused, never unpickled.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archc.hf.config import Fields, HFImportError, config_path, read_config, read_json_object
from archc.hf.families import FAMILIES, ImportPlan, Source

#: The sharded checkpoint's index (transformers' `save_pretrained` above its shard size).
INDEX = "model.safetensors.index.json"
#: Largest index read (a 400B model's is ~100 kB).
MAX_INDEX_BYTES = 64 << 20
SINGLE = "model.safetensors"


@dataclass
class Imported:
    plan: ImportPlan
    #: archc state-dict key → the checkpoint tensor (or part of one) it is
    names: dict[str, Source]
    #: the checkpoint files the weights come from (empty when there are none beside the config)
    files: dict[str, Path]

    @property
    def spec(self) -> str:
        return self.plan.spec


def plan_import(source: str | Path) -> ImportPlan:
    """The spec a config describes (the family's rule), refusing fields no rule read."""
    return plan_config(read_config(source))


def plan_config(cfg: dict[str, Any]) -> ImportPlan:
    """`plan_import` of a config already read (export-hf checks a config it proposes this way)."""
    model_type = cfg.get("model_type")
    rule = FAMILIES.get(model_type) if isinstance(model_type, str) else None
    if rule is None:
        raise HFImportError(f"model_type {model_type!r} is not a family archc imports yet",
                            f"families: {', '.join(sorted(FAMILIES))} (docs/hf.md)", field="model_type")
    fields = Fields(cfg)
    plan = rule(fields)
    left = [k for k in fields.unread() if cfg[k] not in (None, False, [], {})]
    if left:
        shown = ", ".join(f"`{k}` = {json.dumps(cfg[k])[:60]}" for k in left)
        raise HFImportError(f"{model_type} config fields archc does not read: {shown}",
                            "a field archc cannot express would make a different model; docs/hf.md lists "
                            "the fields each family reads", field=left[0])
    return plan


def _checkpoint_files(folder: Path) -> dict[str, Path]:
    """Checkpoint tensor name → the safetensors file holding it."""
    if (folder / INDEX).is_file():
        index = read_json_object(folder / INDEX, MAX_INDEX_BYTES, "a checkpoint index")
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict):
            raise HFImportError(f"{folder / INDEX} has no `weight_map`")
        out = {}
        for name, shard in weight_map.items():
            path = (folder / str(shard)).resolve()
            if path.parent != folder.resolve() or not path.is_file():
                raise HFImportError(f"{INDEX} maps `{name}` to {shard!r}, not a file in {folder}")
            out[name] = path
        return out
    if (folder / SINGLE).is_file():
        return dict.fromkeys(_header(folder / SINGLE)[1], folder / SINGLE)
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
        raise HFImportError(f"{folder} holds pickled weights only; archc reads safetensors and never unpickles",
                            "save them with save_pretrained(..., safe_serialization=True)")
    return {}


def _per_layer(table: dict[str, Any], layers: int) -> dict[str, Any]:
    """`table` with its `{i}` patterns written out for every layer."""
    out = {}
    for pattern, value in table.items():
        if "{i}" not in pattern:
            out[pattern] = value
            continue
        for i in range(layers):
            out[pattern.format(i=i)] = (value.format(i=i) if isinstance(value, str) else value.at(i)
                                        if isinstance(value, Source) else tuple(v.at(i) for v in value))
    return out


def name_map(plan: ImportPlan, graph: Any, present: set[str], write: bool = False) -> dict[str, Source]:
    """archc key → its checkpoint source for every declared weight of the spec's graph (of
    several layouts, the first whose tensor the checkpoint has: `present`; with `write`, for
    export-hf, the last: the layout of the published checkpoints, which every transformers
    version reads and `save_pretrained` writes)."""
    from archc.passes.facts import graph_weights

    prefixes = _per_layer(plan.modules, plan.layers)
    sources = _per_layer(plan.sources, plan.layers)
    out = {}
    for key in graph_weights(graph):
        if key in sources:
            choices = sources[key] if isinstance(sources[key], tuple) else (sources[key],)
            out[key] = choices[-1] if write else next((c for c in choices if c.name in present), choices[0])
            continue
        node = max((p for p in prefixes if key.startswith(p + ".")), key=len, default=None)
        if node is None:
            raise HFImportError(f"archc weight `{key}` has no checkpoint module in the {plan.family} rule")
        out[key] = Source(prefixes[node] + key[len(node):])
    return out


def _shape(shape: list[int], src: Source) -> tuple[int, ...]:
    """The shape `src` reads from a checkpoint tensor of `shape`."""
    shape = list(shape[1:]) if src.index is not None else list(shape)
    out = list(reversed(shape)) if src.transpose else list(shape)
    if src.rows is not None and src.period is not None:
        out[0] = out[0] // src.period * (src.rows[1] - src.rows[0])
    elif src.rows is not None:
        out[0] = min(src.rows[1], out[0]) - src.rows[0]
    return tuple(out)


def _read(f: Any, src: Source) -> Any:
    """`src`'s tensor from an open safetensors file: only its rows are read (all of it where the
    rows recur in every `period`)."""
    if src.period is not None and src.rows is not None:
        t = f.get_tensor(src.name)
        a, b = src.rows
        return t.reshape(-1, src.period, *t.shape[1:])[:, a:b].reshape(-1, *t.shape[1:]).contiguous()
    if src.rows is None and src.index is None:
        t = f.get_tensor(src.name)
    else:
        part = f.get_slice(src.name)
        head = () if src.index is None else (src.index,)
        a, b = src.rows or (None, None)
        t = part[(*head, slice(None), slice(a, b))] if src.transpose else part[(*head, slice(a, b))]
    return t.t().contiguous() if src.transpose else t


def import_hf(source: str | Path) -> Imported:
    """Plan the import of `source` (a folder with config.json and safetensors, or a config.json):
    the spec and the checked name map. `save` then writes them."""
    from archc.errors import ArchError
    from archc.frontend import loads

    plan = plan_import(source)
    try:
        program = loads(plan.spec, f"{plan.family}.arch")
    except ArchError as e:  # widths the config gives that the ops refuse (heads not dividing d, …)
        d = e.diagnostics[0]
        raise HFImportError(f"the {plan.family} config describes a model archc refuses: {d.message}", d.hint) from None
    folder = config_path(source).parent
    files = _checkpoint_files(folder)
    names = name_map(plan, program.graph, set(files))
    if files:
        from archc.passes.facts import graph_weights

        declared = graph_weights(program.graph)
        missing = [k for k, v in names.items() if v.name not in files]
        if missing:
            raise HFImportError(f"the checkpoint has no `{names[missing[0]].name}` (archc's `{missing[0]}`)"
                                + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
        used = {v.name for v in names.values()}
        extra = [n for n in files if n not in used and not n.endswith(plan.skip)]
        if extra:
            raise HFImportError(f"checkpoint tensors the {plan.family} rule does not place: {', '.join(extra[:4])}"
                                + (" …" if len(extra) > 4 else ""),
                                "a tensor archc would drop makes a different model")
        headers = {path: _header(path)[1] for path in set(files.values())}
        for key, src in names.items():
            info = headers[files[src.name]].get(src.name)
            if info is None:
                raise HFImportError(f"{INDEX} places `{src.name}` in {files[src.name].name}, which does not hold it")
            shape = _shape(info["shape"], src)
            if shape != declared[key].shape:
                raise HFImportError(f"checkpoint `{src.name}` gives {list(shape)}, archc's `{key}` "
                                    f"is {list(declared[key].shape)}: the config does not describe these weights")
    return Imported(plan, names, files)


#: safetensors' dtype names by element size
_ELEMENT_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                  "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


#: The largest safetensors header read (safetensors' own limit is 100 MB).
MAX_HEADER_BYTES = 100 << 20


def _header(shard: Path) -> tuple[int, dict[str, Any]]:
    """(where the data starts, {tensor: {dtype, shape, data_offsets}}) of a safetensors file, read
    from its header (8-byte little-endian length, then JSON) as the format defines it."""
    with open(shard, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise HFImportError(f"{shard.name} is not a safetensors file (shorter than its header)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES:
            raise HFImportError(f"{shard.name}: a safetensors header of {n} bytes; not a checkpoint")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise HFImportError(f"{shard.name}: its safetensors header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise HFImportError(f"{shard.name}: its safetensors header is not an object")
    header.pop("__metadata__", None)
    data = shard.stat().st_size - 8 - n
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            ok = (dtype in _ELEMENT_BYTES and all(isinstance(d, int) and d >= 0 for d in shape)
                  and isinstance(begin, int) and 0 <= begin <= end <= data
                  and end - begin == _ELEMENT_BYTES[dtype] * math.prod(shape))
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise HFImportError(f"{shard.name}: tensor `{name}` has an impossible entry {json.dumps(info)[:120]} "
                                "(a damaged file, or a dtype archc does not load)")
    return 8 + n, header


def _copy(src: Any, dst: Any, offset: int, count: int) -> None:
    """`count` bytes of `src` from `offset` appended to `dst`: in the kernel (`sendfile`: no copy
    through this process's memory) where the system takes it, else in 16 MB reads. (`sendfile`,
    not `copy_file_range`: on ext4 the latter copied 500 MB in 0.85–1 s against sendfile's
    0.14–0.18 s on this project's machine; tools/bench_import.py.)"""
    try:
        while count:
            done = os.sendfile(dst.fileno(), src.fileno(), offset, count)
            if done == 0:
                raise OSError("sendfile copied nothing")
            offset, count = offset + done, count - done
        return
    except (AttributeError, OSError):
        pass
    src.seek(offset)
    while count:
        chunk = src.read(min(count, 16 << 20))
        if not chunk:
            raise HFImportError(f"{Path(src.name).name} ends before its tensors do")
        dst.write(chunk)
        count -= len(chunk)


def _stream_weights(imported: Imported, path: Path) -> int:
    """The checkpoint's tensors under archc's names into `path` (a transaction's new file: see
    `save`), in archc's checkpoint format (`archc build --weights`, `train --init`); returns the
    count.

    Written as a stream: the header first (every tensor's dtype, shape and offsets are known from
    the checkpoint's headers), then each tensor in turn. A tensor archc takes as it is (most of
    them: the names are the only change) is copied byte for byte from the checkpoint by the
    kernel; one that is transposed or sliced (`Source`) is read, written and dropped. The import
    holds one tensor in memory at most, not the model (`safetensors.torch.save_file` wants every
    tensor at once and serializes them into a second buffer; the format — an 8-byte header
    length, a JSON header, the data — is what it writes, and `load_file` reads the result back in
    the tests)."""

    by_shard: dict[Path, list[str]] = {}
    for key, src in imported.names.items():
        by_shard.setdefault(imported.files[src.name], []).append(key)
    headers = {shard: _header(shard) for shard in by_shard}
    header: dict[str, Any] = {"__metadata__": {"pipeline": json.dumps("O0"),
                                               "source": json.dumps(f"hf:{imported.plan.family}")}}
    offset = 0
    for shard in sorted(by_shard):
        for key in sorted(by_shard[shard]):
            src = imported.names[key]
            info = headers[shard][1][src.name]
            dtype, shape = info["dtype"], _shape(info["shape"], src)
            size = _ELEMENT_BYTES[dtype] * math.prod(shape)
            header[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    with open(path, "r+b") as out:  # the transaction made it: no truncation (ext4 flushes truncated files on close)
        out.write(struct.pack("<Q", len(text)))
        out.write(text)
        out.flush()
        with _Writeback(out) as writeback:
            _copy_tensors(imported, by_shard, headers, out, writeback)
    return len(header) - 1


def _copy_tensors(imported: Imported, by_shard: dict[Path, list[str]], headers: dict[Path, Any], out: Any,
                  writeback: _Writeback) -> None:
    """Each tensor in the header's order: copied as stored, or read, converted and written."""
    import torch
    from safetensors import safe_open

    for shard in sorted(by_shard):
        start, tensors = headers[shard]
        with open(shard, "rb") as raw, safe_open(str(shard), "pt") as f:
            for key in sorted(by_shard[shard]):
                src = imported.names[key]
                if src == Source(src.name):  # as stored: the bytes themselves
                    begin, end = tensors[src.name]["data_offsets"]
                    _copy(raw, out, start + begin, end - begin)
                else:
                    t = _read(f, src).contiguous()
                    out.write(t.reshape(-1).view(torch.uint8).numpy().data)
                    out.flush()
                writeback()


#: how much is copied before its writeback to the disk is started
WRITEBACK_BYTES = 64 << 20


class _Writeback:
    """Starts writing the copied bytes to the disk while the copy goes on, so the transaction's
    closing fsync finds most of the file written (on this project's machine the 0.9 GB import's
    fsync took 0.46 s of its 1.2 s before: tools/bench_import.py). Every `WRITEBACK_BYTES`, the new
    range's writeback is started on a thread (`POSIX_FADV_DONTNEED` on the range writes its dirty
    pages, as `dd oflag=nocache` uses it, and drops them from the page cache once written: the
    import never reads its output back; the call blocks while the disk's queue is full, which is
    why it runs beside the copy, not in it)."""

    def __init__(self, out: Any) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.out, self.since = out, out.tell()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="archc-writeback")

    def __call__(self) -> None:
        end = self.out.tell()
        if end - self.since >= WRITEBACK_BYTES:
            self.pool.submit(self._start, self.out.fileno(), self.since, end - self.since)
            self.since = end

    @staticmethod
    def _start(fd: int, offset: int, length: int) -> None:
        with contextlib.suppress(AttributeError, OSError):
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)

    def __enter__(self) -> _Writeback:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True)  # before the file is closed: the thread holds its descriptor


def save(imported: Imported, spec_out: str | os.PathLike[str] | None,
         weights_out: str | os.PathLike[str] | None, force: bool = False) -> int:
    """Write the import: the weights (when asked) and the spec, each whole or not at all through
    archc's transactional writes. Both targets are checked before anything is written (an existing
    file refused unless `force`, links and folders always), they must differ, and neither may be
    one of the files read (the config, a checkpoint shard, its index): an import never replaces its
    own source. Returns the number of tensors written."""
    from archc.files.output import check_file, output_file, write_text

    spec_path = check_file(spec_out, force) if spec_out is not None else None
    weights_path = check_file(weights_out, force, "--weights") if weights_out is not None else None
    if spec_path is not None and spec_path == weights_path:
        raise HFImportError(f"the spec and the weights would both be written to {spec_path}")
    folder = next(iter(imported.files.values())).parent if imported.files else None
    inputs = {p.resolve() for p in imported.files.values()}
    if folder is not None:
        inputs |= {(folder / INDEX).resolve(), (folder / "config.json").resolve()}
    for target in (spec_path, weights_path):
        if target is not None and target.resolve() in inputs:
            raise HFImportError(f"{target} is a file this import reads; write the import elsewhere")
    n = 0
    if weights_path is not None:
        if not imported.files:
            raise HFImportError("there are no weights beside this config.json",
                                "pass the folder save_pretrained wrote, with its safetensors")
        with output_file(weights_path, force, "--weights") as tmp:
            n = _stream_weights(imported, tmp)
    if spec_path is not None:
        with output_file(spec_path, force) as tmp:
            write_text(tmp, imported.spec)
    return n
