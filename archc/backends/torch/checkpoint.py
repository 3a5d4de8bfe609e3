"""Weights, optimizer state and run metadata in safetensors files: nothing is ever unpickled.

A run folder holds `last.safetensors` (the model's weights in the canonical, unfused layout
whatever pipeline built the model; metadata: spec name, step, seed, the pipeline) and
`train_state.safetensors` (AdamW's moments and step counts under `<param>.<slot>` keys, the
scheduler step, and the data generator's state as a uint8 tensor; metadata: the step and the train
config). `archc.backends.torch.train` writes the two of one step in one transaction
(`archc.files.output`), so a folder never holds the weights of one step beside the optimizer state
of another; `load_train_state` checks the steps agree anyway (a folder assembled by hand).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from archc.backends.torch.module import held_tensors


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None,
                 layout: Literal["canonical", "fused"] = "canonical") -> None:
    """The model's weights in the canonical (unfused, reference-named) layout, whatever pipeline
    built it; `layout="fused"` stores a fused build's packed weights as they are, with what each
    packs in the metadata (`packs`), so that any build can still load the file. The metadata
    records the pipeline that built the model."""
    # canonical: state_dict's hooks unpack fused weights; fused: the tensors as the modules hold them
    state = model.state_dict() if layout == "canonical" else held_tensors(model)
    meta = {"pipeline": getattr(model, "pipeline", "O0"), **(metadata or {})}
    if layout == "fused":
        meta["packs"] = packs_of(model)
    save_state(state, path, meta)


def save_state(state: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, Any]) -> None:
    """A state dict as one safetensors file, each metadata value JSON-encoded (a distributed run's
    weights, gathered on rank 0, are written through here as a single process's are)."""
    tensors = {}
    for k, v in state.items():
        t = v.detach().contiguous().cpu()
        if t.untyped_storage().nbytes() != t.numel() * t.element_size():  # a part of a packed weight
            t = t.clone()
        tensors[k] = t
    save_file(tensors, str(path), metadata={k: json.dumps(v) for k, v in metadata.items()})


def packs_of(model: nn.Module) -> dict[str, list[tuple[str, int]]]:
    """{packed weight key: [(canonical key, rows), …]} of a fused build's modules."""
    out = {}
    for prefix, mod in model.named_modules():
        for w in getattr(mod, "packed_weights", list)():
            base = f"{prefix}." if prefix else ""
            out[base + w.name] = [(base + name, rows) for name, rows in w.packs]
    return out


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> dict[str, Any]:
    """Load weights saved by `save_weights` (either layout, into a build of any pipeline); returns
    the metadata. Names and shapes must match."""
    from safetensors import safe_open

    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        stored = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    for key, parts in stored.get("packs", {}).items():  # a fused file: back to the canonical layout
        if key in tensors:
            whole = tensors.pop(key)
            tensors.update(zip((name for name, _ in parts), whole.split([rows for _, rows in parts]), strict=True))
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = sorted(k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape)
    if strict and (missing or unexpected or wrong):
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with other shapes (e.g. {k}: file {tuple(tensors[k].shape)}, "
                         f"model {tuple(own[k].shape)})")
        raise ValueError(f"{path} does not match this spec's parameters: " + "; ".join(parts))
    model.load_state_dict(tensors, strict=strict)
    return stored


def save_train_state(path: str | Path, model: nn.Module, opt: torch.optim.Optimizer, sched_step: int,
                     gen: torch.Generator, metadata: dict[str, Any]) -> None:
    names = {id(p): n for n, p in model.named_parameters()}
    tensors: dict[str, torch.Tensor] = {}
    for group in opt.param_groups:
        for p in group["params"]:
            for slot, value in opt.state.get(p, {}).items():
                t = value if torch.is_tensor(value) else torch.tensor(value)
                tensors[f"{names[id(p)]}.{slot}"] = t.detach().contiguous().cpu()
    tensors["__scheduler_step__"] = torch.tensor(sched_step)
    tensors["__data_rng__"] = gen.get_state()
    # the optimizer's moments follow the parameters as the build holds them (packed by a fused
    # pipeline), so a train state resumes only under the pipeline that wrote it
    metadata = {**metadata, "step": sched_step, "pipeline": getattr(model, "pipeline", "O0")}
    save_file(tensors, str(path), metadata={k: json.dumps(v) for k, v in metadata.items()})


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: damaged, of another spec, or of another step."""


def load_train_state(path: str | Path, model: nn.Module, opt: torch.optim.Optimizer,
                     gen: torch.Generator, weights_step: int | None = None) -> int:
    """Restore optimizer moments and the data generator; returns the scheduler step. Everything
    is checked before anything is restored: a damaged file or one of another spec (or, given
    `weights_step`, of another step than the weights) is a `CheckpointError`."""
    from safetensors import SafetensorError, safe_open

    try:
        tensors = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"{path} cannot be read ({e}): it is damaged or not a train state") from None
    saved_pipeline = json.loads(meta["pipeline"]) if "pipeline" in meta else "O0"
    ours = getattr(model, "pipeline", "O0")
    if saved_pipeline != ours:
        raise CheckpointError(f"{path} is the optimizer state of a run built at {saved_pipeline} (its moments follow "
                              f"that build's packed parameters); this build is {ours}: resume with --pipeline "
                              f"{saved_pipeline}")
    params = dict(model.named_parameters())
    restored: dict[str, tuple[torch.nn.Parameter, str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("__"):
            continue
        name, _, slot = key.rpartition(".")
        p = params.get(name)
        if p is None or (slot != "step" and value.shape != p.shape):
            raise CheckpointError(f"{path} holds optimizer state for {key!r} {tuple(value.shape)}, which this spec's "
                                  "parameters do not match")
        restored[key] = (p, slot, value)
    if "__data_rng__" not in tensors or "__scheduler_step__" not in tensors:
        raise CheckpointError(f"{path} lacks the scheduler step or the data generator's state")
    step = int(tensors["__scheduler_step__"])
    saved_step = json.loads(meta["step"]) if "step" in meta else None
    if weights_step is not None and saved_step is not None and saved_step != weights_step:
        raise CheckpointError(f"{path} is the optimizer state of step {saved_step}, the weights beside it of step "
                              f"{weights_step}")
    try:
        gen.set_state(tensors["__data_rng__"])
    except (RuntimeError, TypeError) as e:
        raise CheckpointError(f"{path}: the data generator's state is damaged ({e})") from None
    for p, slot, value in restored.values():
        opt.state.setdefault(p, {})[slot] = value.to(p.device) if slot != "step" else value
    return step
