"""The train state of `archc train --nproc`: a `torch.distributed.checkpoint` (DCP) folder,
`train_state.dcp/`, that resumes under another plan.

Every rank writes what it holds — its shards of the weights and of the optimizer's moments, as
DTensors where tensor parallelism or FSDP split them — under the single-process names
(`model.<name>`, `optim.<name>.<slot>`), with the scheduler's step and the data generator's state.
DCP records each tensor's global shape and which rank wrote which slice of it, so a run under
another plan (other degrees, another world size, a pipeline instead of FSDP) loads the slices its
own layout needs: DCP's load reshards. The weights of the same step are also consolidated into
`last.safetensors` (single-process names) beside it, which `archc generate`, `archc export` and a
one-process `archc train --init` read.

The folder is written through the run folder's transaction (archc/files/output.py): rank 0 opens
it, every rank writes its file into the staged folder, rank 0 commits the checkpoint whole — a
kill mid-save leaves the previous checkpoint as it was. The state of a previous run of another
shape (another world size, or a one-process `train_state.safetensors`) is replaced with it, never
left stale beside it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from archc.backends.torch.checkpoint import CheckpointError
from archc.files.output import Owned

#: the folder of a distributed run's train state, inside the run folder
STATE_DIR = "train_state.dcp"
#: the files torch.distributed.checkpoint's FileSystemWriter writes: its manifest and one file per rank
_DCP_FILE = re.compile(r"^(\.metadata|__\d+_\d+\.distcp)$")


def state_files(out: Path, ranks: int = 0) -> tuple[str, ...]:
    """The files of a distributed train state in the run folder `out`: those `ranks` processes
    write now, and those already there (a save replaces them all, so that no rank's file of an
    earlier, larger run stays beside the new manifest)."""
    folder = out / STATE_DIR
    there = {f"{STATE_DIR}/{p.name}" for p in folder.iterdir() if _DCP_FILE.match(p.name)} if folder.is_dir() else set()
    new = {f"{STATE_DIR}/.metadata", *(f"{STATE_DIR}/__{r}_0.distcp" for r in range(ranks))} if ranks else set()
    return tuple(sorted(there | new))


def with_state_files(owned: Owned, out: Path, ranks: int = 0) -> Owned:
    """`owned` plus the distributed train state's files (`state_files`)."""
    return Owned((*owned.files, *state_files(out, ranks)), marker=owned.marker, refuse=owned.refuse, what=owned.what)


def holdings(trained: nn.Module, model: nn.Module, rank: int) -> tuple[dict[str, Tensor], dict[str, nn.Parameter]]:
    """(the weights this rank holds — its `state_dict`, DTensors where they are split —, the
    parameters it trains), both under the single-process names: a pipeline's stages (a ModuleList)
    lose their index, an expert-parallel rank leaves out the experts other ranks own."""
    staged = isinstance(trained, nn.ModuleList)
    owners: dict[str, int] = getattr(model, "expert_owners", None) or {}

    def name(n: str) -> str:
        return n.split(".", 1)[1] if staged else n

    def mine(n: str) -> bool:
        return not any(n.startswith(prefix) and owner != rank for prefix, owner in owners.items())

    weights = {name(k): v for k, v in trained.state_dict().items() if mine(name(k))}
    params = {name(k): p for k, p in trained.named_parameters() if mine(name(k))}
    return weights, params


def _local(opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer that holds this rank's state (ZeRO-1's is the wrapped one, over its share)."""
    return getattr(opt, "optim", opt)


def _stepped(opt: torch.optim.Optimizer, params: dict[str, nn.Parameter]) -> dict[str, nn.Parameter]:
    """The parameters this rank's optimizer steps, by name."""
    names = {id(p): n for n, p in params.items()}
    return {names[id(p)]: p for g in _local(opt).param_groups for p in g["params"] if id(p) in names}


def state_dict(trained: nn.Module, model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator, step: int,
               rank: int) -> dict[str, Any]:
    """What this rank writes: its weights, its optimizer state, the step and the data generator."""
    from archc.backends.torch.tensor_shards import full_tensor, shards

    weights, params = holdings(trained, model, rank)
    # a local shard's pieces are written whole (gathered, un-permuted): the same on every rank
    local = shards(trained)
    sd: dict[str, Any] = {f"model.{k}": full_tensor(trained, k, v) if k in local else v for k, v in weights.items()}
    state = _local(opt).state
    for name, p in _stepped(opt, params).items():
        for slot, value in state.get(p, {}).items():
            value = value if torch.is_tensor(value) else torch.tensor(value)
            if name in local and value.shape == p.shape:
                value = full_tensor(trained, name, value)
            sd[f"optim.{name}.{slot}"] = value
    sd["__scheduler_step__"] = torch.tensor(step)
    sd["__data_rng__"] = gen.get_state()
    return sd


def save(out: Path, owned: Owned, sd: dict[str, Any], write_rest: Callable[[Path], None]) -> None:
    """One checkpoint, committed whole: every rank writes its part of `sd` into the staged
    `train_state.dcp/`, rank 0 writes the rest (`write_rest(stage)`: the consolidated weights, the
    config, the curve) and commits. Every rank calls it."""
    import torch.distributed.checkpoint as dcp

    from archc.files.output import output_folder

    lead = dist.get_rank() == 0
    with output_folder(out, owned, force=True) if lead else nullcontext() as txn:
        stage: list[Any] = [str(txn.stage) if lead else None]
        dist.broadcast_object_list(stage, src=0)
        dcp.save(sd, checkpoint_id=Path(stage[0]) / STATE_DIR)
        if lead:
            write_rest(txn.stage)
        dist.barrier()


def load(out: Path, trained: nn.Module, model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator,
         rank: int) -> int:
    """Restore the train state in `out/train_state.dcp` into this rank's weights and optimizer —
    whatever plan wrote it: each tensor is read in the slices this layout holds. Checked first:
    a name or a global shape the spec does not have is a `CheckpointError`. Returns the step."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    path = out / STATE_DIR
    try:
        saved = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    except Exception as e:  # a missing or damaged manifest
        raise CheckpointError(f"{path} cannot be read ({type(e).__name__}: {e})") from None

    def shape(key: str) -> tuple[int, ...] | None:
        m = saved.get(key)
        return tuple(m.size) if isinstance(m, TensorStorageMetadata) else None

    from archc.backends.torch.tensor_shards import shards

    weights, params = holdings(trained, model, rank)
    local = shards(trained)
    # a local shard's tensors are read whole, then this rank's piece is put in place
    pieces: list[tuple[Tensor, str, Tensor]] = []

    def whole(name: str, t: Tensor) -> Tensor:
        if name not in local:
            return t
        buf = torch.zeros(local[name][0].held[local[name][1]].shape, dtype=t.dtype, device="cpu")
        pieces.append((t, name, buf))
        return buf

    sd: dict[str, Any] = {}
    for name, t in weights.items():
        want = local[name][0].held[local[name][1]].shape if name in local else tuple(t.shape)
        if shape(f"model.{name}") != tuple(want):
            have = shape(f"model.{name}")
            raise CheckpointError(f"{path} has no weight {name!r} of shape {tuple(want)}"
                                  + (f" (it holds {have})" if have else "") + ": it is of another spec")
        sd[f"model.{name}"] = whole(name, t)
    state = _local(opt).state
    for name, p in _stepped(opt, params).items():
        prefix = f"optim.{name}."
        full_shape = local[name][0].held[local[name][1]].shape if name in local else tuple(p.shape)
        for key in (k for k in saved if k.startswith(prefix) and "." not in k[len(prefix):]):
            size, meta = shape(key), saved[key]
            if size == ():
                value = torch.zeros((), dtype=meta.properties.dtype)
            elif size == tuple(full_shape):
                value = torch.zeros_like(p, memory_format=torch.contiguous_format)
            else:
                raise CheckpointError(f"{path} holds optimizer state {key!r} {size}, which {name!r} "
                                      f"{tuple(full_shape)} does not match")
            state.setdefault(p, {})[key[len(prefix):]] = value
            sd[key] = whole(name, value) if size else value
    if shape("__scheduler_step__") is None or shape("__data_rng__") is None:
        raise CheckpointError(f"{path} lacks the scheduler step or the data generator's state")
    sd["__scheduler_step__"] = torch.zeros((), dtype=torch.int64)
    sd["__data_rng__"] = torch.empty_like(gen.get_state())
    dcp.load(sd, checkpoint_id=str(path))
    for target, name, full in pieces:
        _put(target, local[name][0].scatter(local[name][1], full.to(_device_of(target))))
    gen.set_state(sd["__data_rng__"])
    return int(sd["__scheduler_step__"])


def _device_of(t: Tensor) -> torch.device:
    from torch.distributed.tensor import DTensor

    return t.to_local().device if isinstance(t, DTensor) else t.device


def _put(target: Tensor, piece: Tensor) -> None:
    """Copy this rank's piece of a local shard into `target` (FSDP's shard of it, when a DTensor)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    with torch.no_grad():
        if isinstance(target, DTensor):
            target.to_local().copy_(distribute_tensor(piece, target.device_mesh, target.placements).to_local())
        else:
            target.copy_(piece)
