"""A parallel plan run on PyTorch's own distributed engine: `archc train --nproc N --plan ...`.

The model code knows nothing of parallelism; the plan is applied to the built `ArchModel` from
outside, from each op's parallelism rule (`OpDef.parallel`, archc/ir/sharding.py):

* tensor parallelism with DTensor (`parallelize_module`): a declared weight the rule splits along
  its rows is a `ColwiseParallel` projection, along its columns a `RowwiseParallel` one (its bias
  added once, after the all-reduce); the vocabulary-parallel embedding and LM head are DTensors
  sharded by rows, the embedding's lookups summed across ranks and the logits kept split for
  `loss_parallel`'s cross-entropy; an op the rule cannot split at the degree runs whole on every
  rank (its inputs are the same on every rank); the recurrent mixers run as local shards
  (archc/backends/torch/tensor_shards.py); with sequence parallelism between the ops
  (`_sequence_parallel`);
* data parallelism with FSDP2 (`fully_shard`, one unit per layer op, the embedding and a tied head
  in the root) or, unsharded, composable DDP (`replicate`); each data-parallel rank takes its rows
  of the global batch, and the loss is normalized by the global batch's scored tokens so that the
  averaged gradients equal the single-process ones.

* expert parallelism (all-to-all to the experts' ranks), pipelines (archc/backends/torch/pipeline.py)
  and context parallelism (archc/backends/torch/context_parallel.py), each on its own for now;
* the train state as a distributed checkpoint that resumes under another plan
  (archc/backends/torch/distributed_checkpoint.py).

torchrun starts the processes (`launch`); gloo on CPU, NCCL on CUDA. A step's loss and every
gradient equal the single-process run's (tests/backends/torch/test_distributed.py); what a plan
combines that this execution does not run yet is refused by `degrees` by name
(docs/distributed.md, "Status").
"""

from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from archc.backends.torch.model import IGNORE_INDEX, ArchModel
from archc.ir.sharding import CannotShard, Sharding
from archc.passes.facts import node_parallel

#: set in the processes torchrun starts for `archc train --nproc`
WORKER_ENV = "ARCHC_DISTRIBUTED_WORKER"


class DistributedError(Exception):
    """A plan this execution cannot run, or a launch that failed; the message says which part."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


@dataclass(frozen=True)
class Degrees:
    """The degrees a run executes: `tp` tensor-parallel ranks inside `dp` data-parallel replicas,
    sharded (FSDP2) or not (DDP); or `dp` pipelines of `pp` ranks (`virtual` stages each, `schedule`,
    microbatches of `mbs` sequences), or `dp` rings of `cp` ranks."""

    tp: int = 1
    dp: int = 1
    fsdp: bool = False
    pp: int = 1
    virtual: int = 1
    schedule: str = "1f1b"
    mbs: int = 1
    #: expert-parallel degree, carved from the data-parallel ranks
    ep: int = 1
    #: context-parallel degree: ranks holding chunks of the same sequences
    cp: int = 1
    #: the optimizer's state sharded over the data-parallel ranks (ZeRO-1), the rest DDP
    zero1: bool = False

    @property
    def world(self) -> int:
        return self.tp * self.dp * self.pp * self.cp


def degrees(plan: dict[str, Any], nproc: int) -> Degrees:
    """The executable part of a plan (`archc.parallel.parse_plan`) for `nproc` processes; the rest
    of the world is data parallelism (FSDP under tensor parallelism, and under a pipeline). A
    pipeline runs with tensor and data parallelism, context parallelism with data parallelism
    only, expert parallelism over DDP,
    ZeRO-1 over plain data parallelism; a combination `archc plan` costs but this run does not
    execute is refused by name."""
    combined = {k: v for k, v in plan.items() if k in ("tp", "pp", "cp", "ep") and v > 1}
    if plan.get("zero") in ("fsdp", "zero1") or plan.get("dp", 1) > 1:
        combined["dp"] = plan.get("dp", nproc)

    def alone(key: str, what: str) -> None:
        others = sorted(k for k in combined if k != key and not (key == "ep" and k == "dp"))
        if plan.get(key, 1) != nproc or others:
            raise DistributedError(f"`{key}={plan[key]}`" + (f" with {', '.join(others)}" if others else "")
                                   + f" on --nproc {nproc}: {what} runs on its own for now ({key} = --nproc)",
                                   f"give --nproc {plan[key]} and drop the other degrees, or drop {key}")

    if plan.get("cp", 1) > 1:
        dp = _replicas(plan, "cp", nproc, "context parallelism")
        return Degrees(dp=dp, cp=plan["cp"], fsdp=plan.get("zero") == "fsdp")
    if plan.get("pp", 1) > 1:
        tp = plan.get("tp", 1)
        dp = _replicas(plan, "pp", nproc, "a pipeline", with_tp=True)
        schedule = plan.get("schedule") or ("interleaved" if plan.get("v", 1) > 1 else "1f1b")
        # the stages' data-parallel replicas shard them with FSDP (the schedule tells FSDP2 which
        # microbatch's backward is the last, so that gradients are reduced once a step); each
        # stage's layers split over tp ranks (Megatron's 3-D layout)
        return Degrees(tp=tp, pp=plan["pp"], dp=dp, fsdp=dp > 1, virtual=plan.get("v", 1), schedule=schedule,
                       mbs=plan.get("mbs", 1))
    if plan.get("v", 1) > 1:
        raise DistributedError("`v` (virtual stages) needs a pipeline (pp > 1)")
    if plan.get("ep", 1) > 1:
        if plan.get("zero") in ("fsdp", "zero1"):
            raise DistributedError(f"`ep` with `zero={plan['zero']}`: expert parallelism runs over DDP for now",
                                   "drop zero/fsdp, or ep")
        alone("ep", "expert parallelism (over all the data-parallel ranks, DDP for the rest)")
        return Degrees(dp=nproc, ep=nproc)
    tp = plan.get("tp", 1)
    if nproc % tp:
        raise DistributedError(f"tp={tp} does not divide --nproc {nproc}")
    dp = plan.get("dp", nproc // tp)
    if tp * dp != nproc:
        raise DistributedError(f"the plan's degrees (tp={tp} × dp={dp}) multiply to {tp * dp}, not --nproc {nproc}")
    if tp > 1 and dp > 1 and plan.get("zero") == "ddp":
        raise DistributedError(f"tp={tp} with dp={dp} replicas under DDP: composable DDP does not take tensor-parallel "
                               "DTensors; the data-parallel ranks shard them with FSDP instead",
                               f"give --plan \"tp={tp},fsdp={dp}\"")
    if plan.get("zero") == "zero1" and tp > 1:
        raise DistributedError("`zero=zero1` with tp: the distributed optimizer runs over plain data parallelism "
                               "for now", "drop tp, or use fsdp")
    # with tensor parallelism the data-parallel ranks are FSDP's (torchtitan's 2-D layout): composable
    # DDP does not take DTensors
    fsdp = plan.get("zero") == "fsdp" or (tp > 1 and dp > 1 and plan.get("zero") != "zero1")
    return Degrees(tp, dp, fsdp, zero1=plan.get("zero") == "zero1")


def _replicas(plan: dict[str, Any], key: str, nproc: int, what: str, with_tp: bool = False) -> int:
    """The data-parallel replicas of a pipeline (of `plan[key]` stages, each over `tp` ranks when
    `with_tp`) or a context-parallel ring of `plan[key]` ranks; other degrees with them, or ZeRO-1,
    are refused by name."""
    n = plan[key] * (plan.get("tp", 1) if with_tp else 1)
    others = sorted(k for k in ("tp", "pp", "cp", "ep") if k != key and plan.get(k, 1) > 1
                    and not (with_tp and k == "tp"))
    if others or plan.get("zero") == "zero1":
        with_ = ", ".join(others) or "zero=zero1"
        alone = "tensor and data parallelism" if with_tp else "data parallelism"
        raise DistributedError(f"`{key}={plan[key]}` with {with_}: {what} runs with {alone} only for now",
                               f"drop {with_}, or {key}")
    if nproc % n or plan.get("dp", nproc // n) * n != nproc:
        tp = f" × tp={plan.get('tp', 1)}" if with_tp and plan.get("tp", 1) > 1 else ""
        raise DistributedError(f"{key}={plan[key]}{tp} × dp={plan.get('dp', nproc // n)} is not --nproc {nproc}")
    return nproc // n


def check_plan(graph: Any, deg: Degrees) -> None:
    """What can be told before any process starts: an op whose tensor-parallel rule this execution
    cannot run at the degree, an auxiliary loss inside a pipeline. DistributedError names it."""
    from archc.backends.torch.context_parallel import unsupported
    from archc.backends.torch.pipeline import AUX_PARAMS

    if deg.cp > 1 and (why := unsupported(graph)):
        raise DistributedError(f"context parallelism: {why}", "run the model with tp, dp, fsdp or pp")
    for node in graph.nodes.values():
        if deg.tp > 1:
            rule = node_parallel(graph, node)
            try:
                s = rule.tensor(deg.tp) if rule.tensor is not None else None
            except CannotShard:
                s = None
            if s is not None and s.output == "sum" and node.op != "embed" and (why := _unsupported(graph, node, s)):
                raise DistributedError(f"tensor parallelism of `{node.id}` ({node.op}) at tp={deg.tp} needs "
                                       f"{why}, which this execution does not run yet",
                                       "run it with tp=1 (fsdp/dp, or pp), or plan it with `archc plan`")
        if deg.pp > 1 and any(node.params.get(k) for k in AUX_PARAMS.get(node.op, ())):
            raise DistributedError(f"`{node.id}` ({node.op}) adds an auxiliary loss inside a pipeline stage, and the "
                                   "stages hand on activations only",
                                   "set its " + " and ".join(AUX_PARAMS[node.op]) + " to 0, or run without pp")


def _unsupported(graph: Any, node: Any, s: Sharding) -> str:
    """What of a sharding this execution does not run yet ('' when it runs all of it)."""
    from archc.backends.torch.tensor_shards import unsupported

    return unsupported(graph, node, s)


def _projections_only(op: str, module: nn.Module, s: Sharding) -> bool:
    """Whether DTensor's Colwise/Rowwise styles express the sharding: an op that reads its sizes
    from its projections, every split weight a dense layer's, cut along one axis without packed
    parts or replicas, and nothing reduced inside."""
    from archc.backends.torch.tensor_shards import DTENSOR_STYLED

    if s.reductions or op not in DTENSOR_STYLED:
        return False
    for name, split in s.weights.items():
        layer = name.rpartition(".")[0]
        if split.parts or any(r > 1 for r in split.replicas) or not layer:
            return False
        if not isinstance(module.get_submodule(layer), nn.Linear):
            return False
    return True


def launch(argv: list[str], nproc: int) -> int:
    """Run `archc <argv>` in `nproc` processes on this machine with torchrun's launcher
    (`torch.distributed.launcher.elastic_launch`: the API behind the `torchrun` command, called
    directly because torchrun's own argument parser would read archc's `--nproc` as its
    `--nproc-per-node`), rendezvous on a free local port; returns 0, or 1 when a rank failed (its
    error is on stderr)."""
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"archc-{uuid.uuid4().hex[:8]}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1)
    os.environ[WORKER_ENV] = "1"
    try:
        elastic_launch(config, sys.executable)("-m", "archc", *argv)
    except ChildFailedError:
        return 1
    finally:
        os.environ.pop(WORKER_ENV, None)
    return 0


def is_worker() -> bool:
    return os.environ.get(WORKER_ENV) == "1" and "RANK" in os.environ


@dataclass
class Runtime:
    """The process group and the mesh of one rank: `mesh["pp"]`, `mesh["dp"]`, `mesh["cp"]`, `mesh["tp"]`."""

    deg: Degrees
    mesh: Any
    device: torch.device

    @property
    def rank(self) -> int:
        return dist.get_rank()

    @property
    def dp_rank(self) -> int:
        return self.mesh["dp"].get_local_rank()

    @property
    def is_lead(self) -> bool:
        """The rank that reports a step's loss: rank 0, or a pipeline's last stage of replica 0."""
        if self.deg.pp == 1:
            return self.rank == 0
        return (self.mesh["pp"].get_local_rank() == self.deg.pp - 1 and self.dp_rank == 0
                and self.mesh["tp"].get_local_rank() == 0)

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def start(deg: Degrees) -> Runtime:
    """Join the process group torchrun set up (NCCL on CUDA, gloo on CPU) and build the mesh."""
    from torch.distributed.device_mesh import init_device_mesh

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if dist.get_world_size() != deg.world:
        raise DistributedError(f"{dist.get_world_size()} processes for a plan of {deg.world}")
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    mesh = init_device_mesh(device.type, (deg.pp, deg.dp, deg.cp, deg.tp), mesh_dim_names=("pp", "dp", "cp", "tp"))
    return Runtime(deg, mesh, device)


# -- tensor parallelism -----------------------------------------------------------------------------


class _VocabParallel:
    """A vocabulary-parallel embedding or LM head: its table (and bias) as DTensors sharded by rows
    over the tensor-parallel mesh. The embedding sums its ranks' lookups (DTensor's masked lookup,
    then a Replicate); the head takes replicated hidden states and leaves its logits sharded by
    vocabulary (a DTensor `ArchModel.loss` computes the cross-entropy of under `loss_parallel`)."""

    @staticmethod
    def embedding(module: nn.Module, mesh: Any, sequence: bool = False) -> None:
        from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_module, distribute_tensor

        def partition(name: str, mod: nn.Module, mesh_: Any) -> None:
            if mod is module:
                mod.weight = nn.Parameter(distribute_tensor(mod.weight.data, mesh_, [Shard(0)]))

        def inputs(mod: nn.Module, args: tuple, mesh_: Any) -> tuple:
            return (DTensor.from_local(args[0], mesh_, [Replicate()], run_check=False), *args[1:])

        def outputs(mod: nn.Module, out: Any, mesh_: Any) -> Tensor:
            # the ranks' lookups summed: whole on every rank, or (sequence parallelism) reduce-scattered
            return out.redistribute(mesh_, [Shard(1) if sequence else Replicate()]).to_local()

        distribute_module(module, mesh, partition, inputs, outputs)

    @staticmethod
    def head(module: nn.Module, mesh: Any, sequence: bool = False) -> None:
        from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_module, distribute_tensor

        def partition(name: str, mod: nn.Module, mesh_: Any) -> None:
            if mod is not module:
                return
            for attr in ("weight", "bias"):
                p = getattr(mod, attr, None)
                if isinstance(p, nn.Parameter):
                    setattr(mod, attr, nn.Parameter(distribute_tensor(p.data, mesh_, [Shard(0)])))

        def inputs(mod: nn.Module, args: tuple, mesh_: Any) -> tuple:
            if sequence:  # the hidden states' sequence chunks gathered
                x = DTensor.from_local(args[0], mesh_, [Shard(1)], run_check=False).redistribute(mesh_, [Replicate()])
                return (x, *args[1:])
            return (DTensor.from_local(args[0], mesh_, [Replicate()], run_check=False), *args[1:])

        distribute_module(module, mesh, partition, inputs)


def tensor_parallel(model: ArchModel, mesh: Any, sequence: bool = False) -> list[str]:
    """Apply each op's tensor-parallel rule at the mesh's degree; returns the ops left whole (with
    why). Projection splits run as DTensor styles; the rest (packed parts, replicated groups,
    collectives inside the op, plain parameters) as local shards (archc/backends/torch/tensor_shards.py).
    A rule this execution cannot run yet is refused by `DistributedError`, naming the op."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    from archc.backends.torch.tensor_shards import LocalShard, ShardError

    tp = mesh.size()
    whole: list[str] = []
    styles: dict[str, Any] = {}
    graph = model.graph
    modules = dict(model.op_modules())
    for node in graph.nodes.values():
        if node.id not in modules:
            continue
        rule = node_parallel(graph, node)
        if rule.tensor is None:
            continue
        try:
            s: Sharding = rule.tensor(tp)
        except CannotShard as e:
            whole.append(f"{node.id} ({node.op}): {e}")
            continue
        module = modules[node.id]
        if node.op == "embed":
            _VocabParallel.embedding(module, mesh, sequence)
            continue
        if s.output == "vocab":
            _VocabParallel.head(module, mesh, sequence)
            model.vocab_parallel = True
            continue
        if why := _unsupported(graph, node, s):
            raise DistributedError(f"tensor parallelism of `{node.id}` ({node.op}) at tp={tp} needs "
                                   f"{why}, which this execution does not run yet",
                                   "run it with tp=1 (fsdp/dp, or pp), or plan it with `archc plan`")
        if not _projections_only(node.op, module, s):
            try:
                LocalShard(model, node, module, s, mesh.get_group())
            except ShardError as e:
                raise DistributedError(f"tensor parallelism: {e}", "run it with tp=1") from None
            continue
        for name, split in s.weights.items():
            layer, _, leaf = name.rpartition(".")
            if leaf == "weight":
                styles[f"{node.id}.{layer}"] = ColwiseParallel() if split.axis == 0 else RowwiseParallel()
    if styles:
        parallelize_module(model, mesh, styles)
    if sequence:
        _sequence_parallel(model, mesh)
    return whole


def _sequence_parallel(model: ArchModel, mesh: Any) -> None:
    """Sequence parallelism (Korthikanti et al., 2022) over the tensor-parallel ranks, after the
    tensor-parallel split: between ops the residual stream is split by sequence, each rank holding
    its chunk [B, T/t, d]. Ops that mix no positions and are not split (the norms) run on the chunk
    — their weights' gradients, from the rank's tokens only, are summed after backward
    (`sequence_grads`); a local shard gathers the sequence on entry and reduce-scatters its partial
    outputs; an op split by DTensor styles, or run whole, gathers its input and hands back its chunk
    of the (whole) output (`PrepareModuleInputOutput`: DTensor's redistributions, whose backward
    sums or gathers as each needs). The embedding reduce-scatters its lookups; the LM head gathers."""
    from torch.distributed.tensor import DTensor, Replicate, Shard
    from torch.distributed.tensor.parallel import PrepareModuleInputOutput, parallelize_module

    graph = model.graph
    styles: dict[str, Any] = {}
    # (module, parameter name): FSDP, applied later, replaces the parameters themselves
    local: list[tuple[nn.Module, str]] = []
    head = graph.outputs[0]
    for nid, mod in model.op_modules():
        node = graph.nodes[nid]
        shard = getattr(mod, "_tp_shard", None)
        if node.op == "embed" or nid == head:
            continue
        if shard is not None:
            shard.sequence = True
            local.extend((mod, name) for name in shard.after)
            continue
        split = any(isinstance(p, DTensor) for p in mod.parameters())
        if not split and node_parallel(graph, node).context == "pointwise" and len(graph.input_types(node)) == 1:
            local.extend((mod, name) for name, p in mod.named_parameters() if p.requires_grad)
            continue
        n = len(graph.input_types(node))  # each input a sequence (a cross-attention's too)
        styles[nid] = PrepareModuleInputOutput(input_layouts=(Shard(1),) * n, desired_input_layouts=(Replicate(),) * n,
                                               output_layouts=(Replicate(),), desired_output_layouts=(Shard(1),),
                                               use_local_input=True, use_local_output=True)
    if styles:
        parallelize_module(model, mesh, styles)
    model.sequence_local = local


def sequence_grads(model: nn.Module, group: Any) -> None:
    """Sum over the tensor-parallel ranks the gradients of the weights that ran on each rank's
    sequence chunk (norms, biases added after a reduce-scatter)."""
    for mod, name in getattr(model, "sequence_local", ()):
        p = mod.get_parameter(name)
        if p.grad is not None:
            g = p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad
            dist.all_reduce(g, group=group)


def expert_parallel(model: ArchModel, mesh: Any) -> list[nn.Module]:
    """Expert parallelism over the mesh (the data-parallel ranks): each MoE's experts split by its
    rule (`OpDef.parallel(...).expert`: contiguous ranges, owned whole), and its `run_experts`
    replaced by the all-to-all version — each rank sends every (token, expert) choice to the rank
    owning the expert, runs its own experts on what it receives, and sends the outputs back to be
    weighted by the gates. Returns the expert modules (each rank's own are trained; the others
    are never run here)."""
    import functools

    ep, rank = mesh.size(), mesh.get_local_rank()
    group = mesh.get_group()
    experts: list[nn.Module] = []
    owners: dict[str, int] = {}
    modules = dict(model.op_modules())
    for node in model.graph.nodes.values():
        rule = node_parallel(model.graph, node)
        if rule.expert is None or node.id not in modules:
            continue
        try:
            s = rule.expert(ep)
        except CannotShard as e:
            raise DistributedError(f"expert parallelism of `{node.id}`: {e}") from None
        mod = modules[node.id]
        owned = [u for u in range(s.units) if s.ranks_of_unit(u) == rank]
        mod.run_experts = functools.partial(_all_to_all_experts, mod, group, ep, s.units, owned)
        experts.extend(mod.experts)
        owners.update({f"{node.id}.experts.{u}.": s.ranks_of_unit(u) for u in range(s.units)})
    model.expert_owners = owners
    return experts


def expert_grads_to_sums(model: ArchModel, dp: int) -> None:
    """An expert-parallel expert's gradient is already the sum over every rank's tokens of the
    rank's loss, which `train_parallel` scales by dp for the data-parallel average of the rest:
    divide the experts' back."""
    owners = getattr(model, "expert_owners", None)
    if not owners:
        return
    for name, p in model.named_parameters():
        if p.grad is not None and any(name.startswith(k) for k in owners):
            p.grad.div_(dp)


def gathered_expert_state(model: ArchModel) -> dict[str, Tensor]:
    """The weights on rank 0 of an expert-parallel run: each expert's from the rank that owns it,
    everything else from rank 0 (`gather_object`: the experts are plain modules)."""
    own = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    parts: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(own, parts, dst=0)
    if parts is None:
        return {}
    merged = dict(parts[0])
    for prefix, owner in model.expert_owners.items():
        merged.update({k: v for k, v in parts[owner].items() if k.startswith(prefix)})
    return merged


def _all_to_all_experts(mod: nn.Module, group: Any, ep: int, n_experts: int, owned: list[int], h: Tensor,
                        gates: Tensor, top_i: Tensor) -> Tensor:
    from torch.distributed.nn.functional import all_to_all_single

    n, k = top_i.shape
    token = torch.arange(n, device=h.device).repeat_interleave(k)
    expert = top_i.reshape(-1)
    gate = gates[token, expert]
    keep = gate != 0  # capacity dropping zeroes a choice's gate
    token, expert, gate = token[keep], expert[keep], gate[keep]
    dest = expert * ep // n_experts
    order = torch.argsort(dest, stable=True)
    token, expert, gate, dest = token[order], expert[order], gate[order], dest[order]
    send = torch.bincount(dest, minlength=ep)
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)
    send_sizes, recv_sizes = send.tolist(), recv.tolist()
    got_expert = torch.empty(sum(recv_sizes), dtype=expert.dtype, device=h.device)
    dist.all_to_all_single(got_expert, expert, recv_sizes, send_sizes, group=group)
    got = all_to_all_single(h.new_empty(sum(recv_sizes), h.shape[1]), h[token], recv_sizes, send_sizes,
                            group=group)
    y = torch.zeros_like(got)
    for e in owned:
        idx = (got_expert == e).nonzero().squeeze(-1)
        if idx.numel():
            y = y.index_add(0, idx, mod.experts[e](got[idx]))
    back = all_to_all_single(h.new_empty(len(token), h.shape[1]), y, send_sizes, recv_sizes, group=group)
    return torch.zeros_like(h).index_add(0, token, back * gate[:, None])


def _every_expert(mod: nn.Module, h: Tensor, gates: Tensor, top_i: Tensor) -> Tensor:
    """A MoE's routed sum with every expert run, on no tokens where none chose it: each expert's
    weights then have a gradient (zeros) on every data-parallel rank, so that FSDP's reduce-scatters
    and DDP's buckets hold the same tensors everywhere (an expert no token of a rank reached would
    otherwise leave that rank's collective short). Unlike one process, where such an expert has no
    gradient and AdamW skips it, here it takes a step on a zero gradient (its moments decay)."""
    out = torch.zeros_like(h)
    for e, expert in enumerate(mod.experts):
        idx = gates[:, e].nonzero().squeeze(-1)
        out = out.index_add(0, idx, expert(h[idx]) * gates[idx, e:e + 1])
    return out


#: ops whose parameters a step may leave unused on a rank (experts, routed layers)
_ROUTED = ("moe", "mod", "act")


def data_parallel(model: ArchModel, mesh: Any, fsdp: bool, ignored: list[nn.Module] | None = None) -> None:
    """FSDP2 (`fully_shard`): a unit per layer op (its forward runs, so its gathers fire), the
    embedding and the rest in the root unit (a tied head shares the embedding's table); or DDP
    (`replicate`), leaving out the `ignored` modules (expert-parallel experts: each is on one rank,
    its gradient already the sum over every rank's tokens). A MoE runs every expert on every rank,
    on the tokens routed to it, none included (`_every_expert`)."""
    _every_expert_everywhere(model)
    if not fsdp:
        from torch.distributed._composable.replicate import replicate

        # an expert (or a routed layer) no token of a rank's rows reaches has no gradient there: DDP
        # must look for such parameters, or its buckets' all-reduces differ between the ranks
        routed = any(node.op in _ROUTED for node in model.graph.nodes.values())
        replicate(model, device_mesh=mesh, ignored_modules=ignored or None, find_unused_parameters=routed)
        return
    from torch.distributed.fsdp import fully_shard

    tied = {id(p) for n, p in model.named_parameters() if n.startswith(("embed", "lm_head"))}
    for nid, mod in model.op_modules():
        params = list(mod.parameters())
        if params and not any(id(p) in tied for p in params) and nid not in ("embed", "lm_head"):
            fully_shard(mod, mesh=mesh)
    fully_shard(model, mesh=mesh)


def _every_expert_everywhere(model: ArchModel) -> None:
    """Every MoE that is not expert-parallel runs every expert on every rank (`_every_expert`)."""
    import functools

    for nid, mod in model.op_modules():
        if model.graph.nodes[nid].op == "moe" and "run_experts" not in mod.__dict__:
            mod.run_experts = functools.partial(_every_expert, mod)


def loss_context(model: ArchModel) -> Any:
    """`loss_parallel()` when the logits are vocabulary-sharded DTensors, else nothing."""
    from torch.distributed.tensor.parallel import loss_parallel

    return loss_parallel() if getattr(model, "vocab_parallel", False) else nullcontext()


def clip_grad_norm(model: nn.Module, max_norm: float, stages: Any = None) -> float:
    """Clip the global gradient norm of a model whose parameters are DTensors on different meshes
    and plain tensors (`torch.nn.utils.clip_grad_norm_` will not mix them): each gradient's norm
    is computed over its whole (sharded) tensor; with `stages` (a pipeline's group), the squares
    are summed over the stages (a tied table counted once, on the first)."""
    from torch.distributed.tensor import DTensor

    squares = []
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    first = stages is None or dist.get_rank(stages) == 0
    counted = [(n, p.grad) for n, p in model.named_parameters()
               if p.grad is not None and (first or not n.split(".", 1)[-1].startswith("embed."))]
    from archc.backends.torch.tensor_shards import full_tensor, shards

    local = shards(model)
    for name, g in counted:
        if name in local:  # a local shard's piece: the norm of the whole gradient
            g = full_tensor(model, name, g)
        n = torch.linalg.vector_norm(g, 2.0)
        squares.append((n.full_tensor() if isinstance(n, DTensor) else n).float() ** 2)
    square = torch.stack(squares).sum() if squares else torch.zeros(())
    if stages is not None:
        dist.all_reduce(square, group=stages)
    total = float(square.sqrt())
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for g in grads:
            g.mul_(coef)
    return total


def full_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The whole model's weights on rank 0 (every rank must call this; others get {}), under the
    single-process names: what `archc generate` and `archc export` load."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from archc.backends.torch.tensor_shards import full_tensor, shards

    local = shards(model)
    whole = {name: full_tensor(model, name, p.detach()).cpu() for name, p in model.named_parameters() if name in local}
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() == 0:  # local shards' pieces replaced by their gathered, un-permuted tensors
        state.update(whole)
    return state


def context_loss(rt: Runtime, model: ArchModel, ids: Tensor, labels: Tensor, scored: Tensor
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """This context-parallel rank's chunk of every sequence through the model (its recurrent
    mixers scanning from the previous rank's state), and its share of the loss — its chunk's
    summed loss over the batch's scored tokens, the labels shifted across the chunk boundary —
    with the logits and shifted labels of the chunk."""
    from archc.backends.torch.context_parallel import chunk

    cp = rt.mesh["cp"]
    part, shifted, positions = chunk(cp.get_local_rank(), cp.size(), ids, labels, model.causal, IGNORE_INDEX)
    out = model(part, positions=positions)
    loss = model.loss(out.logits, shifted, scored, shifted=True)
    if out.aux_loss is not None:
        loss = loss + out.aux_loss / cp.size()
    return loss, out.logits, shifted


def sum_grads(model: nn.Module, group: Any) -> None:
    """Sum every gradient over `group` (context-parallel ranks: each has its chunk's share)."""
    from torch.distributed.tensor import DTensor

    for p in model.parameters():
        if p.grad is not None:  # under FSDP, the replica's shard (alike on every context-parallel rank)
            local = p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad
            g = local if local.is_contiguous() else local.contiguous()
            dist.all_reduce(g, group=group)
            if g is not local:
                local.copy_(g)


def shard_batch(rt: Runtime, model: ArchModel, ids: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """This data-parallel rank's rows of the global batch, and the tokens the global batch scores
    (each rank's summed loss is divided by them, so that the ranks' losses add up to the mean)."""
    dp, r = rt.deg.dp, rt.dp_rank
    b = ids.shape[0]
    if b % dp:
        raise DistributedError(f"a batch of {b} sequences does not split over {dp} data-parallel ranks",
                               f"give --batch a multiple of {dp}")
    scored = (labels[:, 1:] if model.causal else labels) != IGNORE_INDEX
    rows = slice(r * b // dp, (r + 1) * b // dp)
    return ids[rows], labels[rows], scored.sum().clamp_min(1)


def rank_loss(model: ArchModel, ids: Tensor, labels: Tensor, scored: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
    """(this rank's share of the task loss — its summed loss over the global batch's scored tokens
    —, the auxiliary losses of its rows, the logits). Call it, and the backward, inside
    `loss_context(model)`: the cross-entropy of vocabulary-parallel logits is computed without
    gathering them (`loss_parallel`), in both directions."""
    from torch.distributed.tensor import DTensor

    out = model(ids)
    loss = model.loss(out.logits, labels, scored)
    if isinstance(loss, DTensor):
        loss = loss.full_tensor()
    return loss, out.aux_loss, out.logits


def train_parallel(model: ArchModel, task: Any, cfg: Any, rt: Runtime, out: Any = None, spec_name: str = "",
                   progress: bool = True, tokenizer: Any = None, resume: bool = False) -> Any:
    """`archc train`'s loop on one rank of a distributed run: the global batch is drawn from the
    same generator on every rank, each data-parallel rank trains on its rows (a pipeline splits
    them into microbatches), the loss of a step is the mean over the global batch's scored tokens
    (so a step equals the single-process step on that batch), gradients are clipped by their
    global norm. Every `cfg.save_every` steps and at the end, the run folder gets a checkpoint
    committed whole: the distributed train state (`train_state.dcp/`, every rank's shards), the
    consolidated weights (`last.safetensors`, single-process names), the config and the loss
    curve. `resume` continues from it under this run's plan, whichever plan wrote it."""
    import time

    from torch.distributed.tensor import DTensor

    from archc.backends.torch import distributed_checkpoint as dcp
    from archc.backends.torch.tensor_shards import sync_grads
    from archc.backends.torch.train import TrainResult, accuracy, lr_at, make_optimizer

    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    model.gradient_checkpointing = cfg.checkpointing
    if getattr(model, "sequence_local", None) is not None and cfg.seq % rt.deg.tp:
        raise DistributedError(f"sequence parallelism splits each sequence into tp={rt.deg.tp} chunks; --seq "
                               f"{cfg.seq} does not divide", f"give --seq a multiple of {rt.deg.tp}")
    pipe = _pipeline(model, rt, cfg) if rt.deg.pp > 1 else None
    trained = pipe.module() if pipe is not None else model
    opt = make_optimizer(trained, cfg, zero=rt.mesh["dp"].get_group() if rt.deg.zero1 else None)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, cfg))
    start, losses = 0, []
    if resume and out is not None:
        start = dcp.load(Path(out), trained, model, opt, gen, rt.dp_rank)
        losses = _losses_before(Path(out), start)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, cfg), last_epoch=start - 1)
    autocast = torch.autocast(rt.device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    acc, tokens, t0 = float("nan"), 0, time.perf_counter()
    # the rank that reports: the last pipeline stage (of the first replica) holds the loss
    lead = rt.is_lead
    for step in range(start, cfg.steps):
        opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=rt.device)
        for _ in range(cfg.accum):
            ids, labels = task.batch(cfg.batch, cfg.seq, gen)
            ids, labels, scored = shard_batch(rt, model, ids, labels)
            ids, labels, scored = ids.to(rt.device), labels.to(rt.device), scored.to(rt.device)
            tokens += ids.numel() * rt.deg.dp
            if pipe is not None:
                with loss_context(model), autocast:
                    share = _pipeline_step(pipe, model, ids, labels, scored, cfg)
                total += share
                continue
            if rt.deg.cp > 1:
                with autocast:
                    loss, logits, labels = context_loss(rt, model, ids, labels, scored)
                # data parallelism averages gradients over its replicas: the task loss is a sum over them
                (loss * rt.deg.dp / cfg.accum).backward()
                total += loss.detach() / cfg.accum
                continue
            with loss_context(model):
                with autocast:
                    loss, aux, logits = rank_loss(model, ids, labels, scored)
                # data parallelism averages gradients over its ranks: the task loss is a sum over them
                scaled = loss * rt.deg.dp + (aux if aux is not None else 0.0)
                (scaled / cfg.accum).backward()
            total += loss.detach() / cfg.accum
        # the step's loss: summed over data-parallel ranks, and from the last stage of a pipeline
        dist.all_reduce(total, group=rt.mesh["dp"].get_group())
        if pipe is not None:
            dist.all_reduce(total, group=rt.mesh["pp"].get_group())
            pipe.sync_tied()
        expert_grads_to_sums(model, rt.deg.dp)
        if rt.deg.tp > 1:  # what several tensor-parallel ranks hold takes the sum of their gradients
            sync_grads(model)
            sequence_grads(model, rt.mesh["tp"].get_group())
        if rt.deg.cp > 1:  # each chunk's share of every gradient, summed over the chunks
            dist.all_reduce(total, group=rt.mesh["cp"].get_group())
            sum_grads(model, rt.mesh["cp"].get_group())
        if cfg.grad_clip > 0:
            clip_grad_norm(trained, cfg.grad_clip, rt.mesh["pp"].get_group() if pipe is not None else None)
        opt.step()
        sched.step()
        losses.append(float(total))
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            if pipe is None:
                full = logits.detach().full_tensor() if isinstance(logits, DTensor) else logits.detach()
                acc = accuracy(full, labels, model.causal and rt.deg.cp == 1)
            if lead and progress:
                print(f"step {step + 1}/{cfg.steps}  loss {losses[-1]:.4f}"
                      + (f"  acc {acc:.3f}" if acc == acc else "")
                      + f"  {tokens / max(time.perf_counter() - t0, 1e-9):,.0f} tokens/s", file=sys.stderr)
        done = step + 1
        if out is not None and cfg.save_every and done % cfg.save_every == 0 and done < cfg.steps:
            _save(rt, model, trained, pipe, opt, gen, done, cfg, Path(out), losses, spec_name)
    if out is not None:
        _save(rt, model, trained, pipe, opt, gen, cfg.steps, cfg, Path(out), losses, spec_name,
              f"{spec_name} — {task.name}", tokenizer)
    model.eval()
    return TrainResult(cfg.steps, losses, acc, tokens / max(time.perf_counter() - t0, 1e-9),
                       Path(out) if out is not None else None)


def _save(rt: Runtime, model: ArchModel, trained: nn.Module, pipe: Any, opt: Any, gen: torch.Generator, step: int,
          cfg: Any, out: Path, losses: list[float], spec_name: str, plot_title: str | None = None,
          tokenizer: Any = None) -> None:
    """One checkpoint of `step` (every rank calls it): the distributed train state, and on rank 0
    the consolidated weights and the config; at the end of the run (`plot_title`), the loss curve
    and the tokenizer too."""
    import json
    from dataclasses import asdict

    from archc.backends.torch import distributed_checkpoint as dcp
    from archc.backends.torch.checkpoint import save_state
    from archc.backends.torch.train import CHECKPOINT, RUN, plot_losses
    from archc.data.tokenizer import write_tokenizer_files
    from archc.files.output import write_text

    if pipe is not None:
        weights = _gather_pipeline_state(pipe)
    elif getattr(model, "expert_owners", None):
        weights = gathered_expert_state(model)
    else:
        weights = full_state_dict(model)
    meta = {"spec": spec_name, "step": step, "losses": losses, "val_losses": [], "config": asdict(cfg),
            "pipeline": getattr(model, "pipeline", "O0"),
            "parallel": {"tp": rt.deg.tp, "dp": rt.deg.dp, "fsdp": rt.deg.fsdp, "zero1": rt.deg.zero1,
                         "pp": rt.deg.pp, "ep": rt.deg.ep, "cp": rt.deg.cp}}

    def write_rest(stage: Path) -> None:
        save_state(weights, stage / "last.safetensors", meta)
        write_text(stage / "train_config.json", json.dumps(asdict(cfg), indent=2) + "\n")
        if plot_title is not None:
            plot_losses(losses, stage / "loss.png", title=plot_title)
            if tokenizer is not None:
                write_tokenizer_files(tokenizer, stage)

    owned = dcp.with_state_files(RUN if plot_title is not None else CHECKPOINT, out, dist.get_world_size())
    dcp.save(out, owned, dcp.state_dict(trained, model, opt, gen, step, rt.dp_rank), write_rest)


def _losses_before(out: Path, step: int) -> list[float]:
    """The loss curve of the run being resumed, up to its checkpoint's `step` (from the metadata of
    the consolidated weights saved with it); a checkpoint whose weights are of another step is a
    `CheckpointError`."""
    import json

    from safetensors import SafetensorError, safe_open

    from archc.backends.torch.checkpoint import CheckpointError

    try:
        with safe_open(str(out / "last.safetensors"), "pt") as f:
            meta = f.metadata() or {}
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"{out / 'last.safetensors'} cannot be read ({e})") from None
    saved = json.loads(meta.get("step", "null"))
    if saved != step:
        raise CheckpointError(f"{out / 'last.safetensors'} is of step {saved}, the train state beside it of step {step}")
    return [float(x) for x in json.loads(meta.get("losses", "[]"))][:step]


def _pipeline(model: ArchModel, rt: Runtime, cfg: Any) -> Any:
    """The pipeline of a `pp` run: its microbatches are `mbs` of the rank's sequences."""
    from archc.backends.torch.pipeline import PipelineError, build_pipeline

    rows = cfg.batch // rt.deg.dp  # this data-parallel replica's sequences
    if rows % rt.deg.mbs:
        raise DistributedError(f"--batch {cfg.batch} over dp={rt.deg.dp} does not split into microbatches of "
                               f"{rt.deg.mbs}")
    micro = rows // rt.deg.mbs
    if rt.deg.virtual > 1 and micro % rt.deg.pp:
        raise DistributedError(f"the interleaved schedule needs a multiple of pp={rt.deg.pp} microbatches, got {micro}",
                               "change --batch or mbs")
    state: dict[str, Any] = {}

    def loss_fn(logits: Tensor, labels: Tensor) -> Tensor:
        # the schedule averages over microbatches: scale each one's share of the global mean back up;
        # FSDP averages over the data-parallel replicas: the task loss is a sum over them
        return model.loss(logits, labels, state["scored"]) * micro * rt.deg.dp

    def shard(stage: nn.Module) -> None:
        from torch.distributed.fsdp import fully_shard

        fully_shard(stage, mesh=rt.mesh["dp"])

    if rt.deg.dp > 1:  # FSDP's replicas: every expert runs on every rank (`data_parallel`)
        _every_expert_everywhere(model)

    # every pipeline's first and last rank (one pipeline per data-parallel replica): the tied table's groups
    grid = rt.mesh.mesh.reshape(rt.deg.pp, -1)
    ends = [(int(grid[0, j]), int(grid[-1, j])) for j in range(grid.shape[1])]
    try:
        pipe = build_pipeline(model, rt.mesh["pp"], rt.deg.virtual, rt.deg.schedule, micro, cfg.seq, loss_fn,
                              rt.device, shard=shard if rt.deg.dp > 1 else None, ends=ends)
    except PipelineError as e:
        raise DistributedError(e.message, e.hint) from None
    pipe.loss_state = state
    pipe.microbatches = micro
    pipe.replicas = rt.deg.dp
    return pipe


def _pipeline_step(pipe: Any, model: ArchModel, ids: Tensor, labels: Tensor, scored: Tensor, cfg: Any) -> Tensor:
    """One accumulation step through the pipeline; the loss share it adds (0 off the last stage)."""
    from archc.backends.torch.pipeline import PipelineError

    pipe.loss_state["scored"] = scored * cfg.accum
    try:
        losses = pipe.step(ids, labels)
    except PipelineError as e:
        raise DistributedError(e.message, e.hint) from None
    if not losses:
        return torch.zeros((), device=ids.device)
    # the replica's share of the step's loss (loss_fn scaled it up for the gradients' averages); a
    # vocabulary-parallel loss is a replicated DTensor
    losses = [x.detach().full_tensor() if hasattr(x, "full_tensor") else x.detach() for x in losses]
    return torch.stack(losses).sum() / (pipe.microbatches * pipe.replicas)


def _gather_pipeline_state(pipe: Any) -> dict[str, Tensor]:
    """Every stage's weights on rank 0 (`gather_object`: a pipeline run's stages are plain modules)."""
    from torch.distributed.tensor import DTensor

    from archc.backends.torch.tensor_shards import full_tensor

    # FSDP's and tensor parallelism's shards gathered within each stage's groups (a local shard's
    # pieces un-permuted), then the stages on rank 0
    own = {k: full_tensor(s, k, v.full_tensor() if isinstance(v, DTensor) else v).detach().cpu()
           for s in pipe.stages for k, v in s.state_dict().items()}
    parts: list[Any] = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(own, parts, dst=0)
    if dist.get_rank() != 0:
        return {}
    merged: dict[str, Tensor] = {}
    for part in parts:
        for k, v in part.items():
            merged.setdefault(k, v)
    return merged
