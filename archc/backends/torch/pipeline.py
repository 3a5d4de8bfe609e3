"""Pipeline parallelism on `torch.distributed.pipelining`: a model's layers cut into stages,
microbatches scheduled GPipe, 1F1B or interleaved 1F1B.

The cuts are the planner's: layers (the rows of `archc summary`) balanced by their FLOPs, so a
hybrid's attention and Mamba layers weigh what they cost (`archc.parallel.estimate.balance`).
A `Stage` holds its layers' op modules under their usual names and runs its slice of the model's
interpreter plan from the one value the previous stage hands on (the residual stream); a cut that
would hand on more than one value is refused. The last stage computes the loss. A tied LM head
reads the embedding's table on the last stage: both ends hold it and all-reduce its gradient after
each step (Megatron's embedding group), so the two copies stay equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from archc.backends.torch.context import Context
from archc.backends.torch.model import ArchModel, _put
from archc.passes.estimate_cost import layer_of

#: ops that add auxiliary losses, and the parameters that turn them on
AUX_PARAMS = {"moe": ("aux_loss", "z_loss"), "mod": ("aux_loss",), "act": ("ponder_cost",)}


class PipelineError(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


def stage_layers(model: ArchModel, stages: int, seq: int) -> list[list[str]]:
    """The model's layers cut into `stages` contiguous runs balanced by forward FLOPs."""
    from archc.ir.cost import CostCtx
    from archc.parallel.estimate import balance
    from archc.parallel.profile import units

    us = units(model.graph, CostCtx(seq=seq))
    if len(us) < stages:
        raise PipelineError(f"{stages} pipeline stages for a model of {len(us)} layers",
                            "use fewer stages (pp × v) than the model has layers")
    runs = balance([sum(n.cost.flops for n in u.nodes) + 1e-9 for u in us], stages)
    out, start = [], 0
    for r in runs:
        out.append([u.name for u in us[start:start + r]])
        start += r
    return out


class Stage(nn.Module):
    """Layers `names` of `model`, run from the value the previous stage hands on."""

    def __init__(self, model: ArchModel, names: list[str], seq: int) -> None:
        super().__init__()
        #: the sequence's length: a stage handed the rank's chunk of it (sequence parallelism) still
        #: runs its ops at the whole sequence's positions
        self.seq = seq
        layers = set(names)
        self.plan = [e for e in model._plan if layer_of(e[0]) in layers]
        ids = {e[0] for e in self.plan}
        graph = model.graph
        needed = list(dict.fromkeys(i for e in self.plan for i in e[2] if i not in ids))
        handed = [i for i in ids if i in graph.outputs or any(u not in ids for u in graph.users_of(i))]
        if len(needed) != 1 or len(handed) != 1:
            raise PipelineError(f"a cut before `{names[0]}` hands on {len(needed)} values and after `{names[-1]}` "
                                f"{len(handed)}; a pipeline stage takes and gives one (the residual stream)",
                                "cut at other layers, or run without pp")
        self.input_id, self.output_id = needed[0], handed[0]
        for nid, *_ in self.plan:  # auxiliary losses would have to travel with the activations
            params = graph.nodes[nid].params
            if any(params.get(k) for k in AUX_PARAMS.get(graph.nodes[nid].op, ())):
                raise PipelineError(f"`{nid}` ({graph.nodes[nid].op}) adds an auxiliary loss inside a pipeline stage, "
                                    "and the stages hand on activations only",
                                    "set its " + " and ".join(AUX_PARAMS[graph.nodes[nid].op]) + " to 0, or run without pp")
        self._model = [model]  # the interpreter (not a submodule: its other layers are not this stage's)
        for nid, mod, *_ in self.plan:
            if mod is not None:
                _put(self, nid, mod)
        #: the embedding module a tied head on this stage reads (a list: not a submodule of its own)
        self._tied: list[nn.Module] = []
        head = next((m for nid, m, *_ in self.plan if nid == graph.outputs[0] and m is not None), None)
        if head is not None and getattr(head, "_tied", None):
            self._tied = [head._tied[0]]
            if not any(e[0] == "embed" for e in self.plan):  # the last stage holds the table too
                _put(self, "embed", head._tied[0])

    @property
    def table(self) -> nn.Module | None:
        """The embedding module whose table this stage holds (first stage, or a tied head's)."""
        if any(e[0] == "embed" for e in self.plan):
            return self.get_submodule("embed")
        return self._tied[0] if self._tied else None

    def forward(self, x: Tensor) -> Tensor:
        ctx = Context(torch.arange(self.seq, device=x.device))
        env = {self.input_id: x}
        self._model[0].run_nodes(env, self.plan, ctx)
        if ctx.aux_losses:
            raise PipelineError("an auxiliary loss (a MoE's load balancing) inside a pipeline stage: the "
                                "stages hand on activations only", "set aux_loss=0, or run without pp")
        return env[self.output_id]


@dataclass
class Pipeline:
    """This rank's stages of a pipeline of `pp` ranks × `virtual` stages each, and its schedule."""

    stages: list[Stage]
    schedule: Any
    first: bool
    last: bool
    group: Any
    tied_group: Any | None

    def module(self) -> nn.Module:
        return nn.ModuleList(self.stages)

    def step(self, ids: Tensor, labels: Tensor) -> list[Tensor]:
        """One step's forward and backward over the microbatches; the last stage's losses."""
        losses: list[Tensor] = []
        if self.first and self.last:
            self.schedule.step(ids, target=labels, losses=losses)
        elif self.first:
            self.schedule.step(ids)
        elif self.last:
            self.schedule.step(target=labels, losses=losses)
        else:
            self.schedule.step()
        return losses

    def sync_tied(self) -> None:
        """Sum the embedding table's gradient over the stages that hold it (first and last)."""
        if self.tied_group is None:
            return
        from torch.distributed.tensor import DTensor

        for s in self.stages:
            if s.table is not None:
                w = s.table.weight
                g = w.grad
                if g is None:
                    return
                if isinstance(g, DTensor) and g.placements != w.placements:
                    # a vocabulary-parallel head's gradient of the table may come back replicated or
                    # partial: laid out as the table is (its rows split over the tensor-parallel ranks)
                    g = w.grad = g.redistribute(w.device_mesh, w.placements)
                # under FSDP, the replica's shard of it (alike on both ends)
                dist.all_reduce(g.to_local() if isinstance(g, DTensor) else g, group=self.tied_group)
                return


def build_pipeline(model: ArchModel, mesh: Any, virtual: int, schedule: str, microbatches: int, seq: int,
                   loss_fn: Any, device: torch.device, shard: Any = None,
                   ends: list[tuple[int, int]] | None = None) -> Pipeline:
    """Cut `model` into pp × `virtual` stages (pp = the mesh's size), keep this rank's (r, r + pp, …)
    and build the schedule over `microbatches`. `shard(stage)` wraps each of this rank's stages
    (FSDP over its data-parallel replicas) before the schedule takes it; `ends` are the (first,
    last) ranks of every pipeline of the world, whose tied tables sum their gradients."""
    from torch.distributed.pipelining import (
        PipelineStage,
        Schedule1F1B,
        ScheduleGPipe,
        ScheduleInterleaved1F1B,
    )

    pp, r = mesh.size(), mesh.get_local_rank()
    total = pp * virtual
    layers = stage_layers(model, total, seq)
    group = mesh.get_group()
    mine = [Stage(model, layers[i], seq) for i in range(r, total, pp)]
    if shard is not None:
        for s in mine:
            shard(s)
    pstages = [PipelineStage(s, i, total, device, group=group) for s, i in zip(mine, range(r, total, pp), strict=True)]
    if schedule == "interleaved" or virtual > 1:
        sched = ScheduleInterleaved1F1B(pstages, n_microbatches=microbatches, loss_fn=loss_fn)
    elif schedule == "gpipe":
        sched = ScheduleGPipe(pstages[0], n_microbatches=microbatches, loss_fn=loss_fn)
    else:
        sched = Schedule1F1B(pstages[0], n_microbatches=microbatches, loss_fn=loss_fn)
    tied_group = None
    if getattr(model.get_submodule(model.graph.outputs[0]), "_tied", None) and pp > 1:
        # the first and the last stage of each pipeline hold the table; every rank creates every
        # pipeline's group (a collective), and keeps its own
        ranks = dist.get_process_group_ranks(group)
        pairs = ends or [(ranks[0], ranks[-1])]
        made = {pair: dist.new_group(list(pair)) for pair in pairs}
        tied_group = made[(ranks[0], ranks[-1])] if r in (0, pp - 1) else None
    return Pipeline(mine, sched, r == 0, r == pp - 1, group, tied_group)
