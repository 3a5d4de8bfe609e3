"""A parallel plan run on PyTorch's own distributed engine: `archc train --nproc N --plan ...`.

The model code knows nothing of parallelism; the plan is applied to the built `ArchModel` from
outside, from each op's parallelism rule (`OpDef.parallel`, archc/ir/sharding.py):

* tensor parallelism with DTensor (`parallelize_module`): a declared weight the rule splits along
  its rows is a `ColwiseParallel` projection, along its columns a `RowwiseParallel` one (its bias
  added once, after the all-reduce); the vocabulary-parallel embedding and LM head are DTensors
  sharded by rows, the embedding's lookups summed across ranks and the logits kept split for
  `loss_parallel`'s cross-entropy; an op the rule cannot split at the degree runs whole on every
  rank (its inputs are the same on every rank);
* data parallelism with FSDP2 (`fully_shard`, one unit per layer op, the embedding and a tied head
  in the root) or, unsharded, composable DDP (`replicate`); each data-parallel rank takes its rows
  of the global batch, and the loss is normalized by the global batch's scored tokens so that the
  averaged gradients equal the single-process ones.

torchrun starts the processes (`launch`); gloo on CPU, NCCL on CUDA. A step's loss and every
gradient equal the single-process run's (tests/backends/torch/test_distributed.py). Pipeline,
context and expert parallelism are planned by `archc plan` and not run yet: `degrees` refuses
them by name (docs/distributed.md, "Status").
"""

from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass
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
    sharded (FSDP2) or not (DDP)."""

    tp: int = 1
    dp: int = 1
    fsdp: bool = False

    @property
    def world(self) -> int:
        return self.tp * self.dp


def degrees(plan: dict[str, Any], nproc: int) -> Degrees:
    """The executable part of a plan (`archc.parallel.parse_plan`) for `nproc` processes; the rest
    of the world is data parallelism. Pipeline, context and expert parallelism, ZeRO-1 and virtual
    stages are refused by name: `archc plan` costs them, this run does not execute them yet."""
    for key in ("pp", "cp", "ep", "v"):
        if plan.get(key, 1) > 1:
            raise DistributedError(f"`{key}={plan[key]}`: archc plans this parallelism but does not run it yet",
                                   "run tp, dp or fsdp (docs/distributed.md lists what runs)")
    if plan.get("zero") == "zero1":
        raise DistributedError("`zero=zero1`: the distributed optimizer is planned, not run yet",
                               "use fsdp=N (ZeRO-3) or dp=N")
    tp = plan.get("tp", 1)
    if nproc % tp:
        raise DistributedError(f"tp={tp} does not divide --nproc {nproc}")
    dp = plan.get("dp", nproc // tp)
    if tp * dp != nproc:
        raise DistributedError(f"the plan's degrees (tp={tp} × dp={dp}) multiply to {tp * dp}, not --nproc {nproc}")
    return Degrees(tp, dp, plan.get("zero") == "fsdp")


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
    """The process group and the mesh of one rank: `mesh["dp"]`, `mesh["tp"]`."""

    deg: Degrees
    mesh: Any
    device: torch.device

    @property
    def rank(self) -> int:
        return dist.get_rank()

    @property
    def dp_rank(self) -> int:
        return self.mesh["dp"].get_local_rank()

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
    mesh = init_device_mesh(device.type, (deg.dp, deg.tp), mesh_dim_names=("dp", "tp"))
    return Runtime(deg, mesh, device)


# -- tensor parallelism -----------------------------------------------------------------------------


class _VocabParallel:
    """A vocabulary-parallel embedding or LM head: its table (and bias) as DTensors sharded by rows
    over the tensor-parallel mesh. The embedding sums its ranks' lookups (DTensor's masked lookup,
    then a Replicate); the head takes replicated hidden states and leaves its logits sharded by
    vocabulary (a DTensor `ArchModel.loss` computes the cross-entropy of under `loss_parallel`)."""

    @staticmethod
    def embedding(module: nn.Module, mesh: Any) -> None:
        from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_module, distribute_tensor

        def partition(name: str, mod: nn.Module, mesh_: Any) -> None:
            if mod is module:
                mod.weight = nn.Parameter(distribute_tensor(mod.weight.data, mesh_, [Shard(0)]))

        def inputs(mod: nn.Module, args: tuple, mesh_: Any) -> tuple:
            return (DTensor.from_local(args[0], mesh_, [Replicate()], run_check=False), *args[1:])

        def outputs(mod: nn.Module, out: Any, mesh_: Any) -> Tensor:
            return out.redistribute(mesh_, [Replicate()]).to_local()

        distribute_module(module, mesh, partition, inputs, outputs)

    @staticmethod
    def head(module: nn.Module, mesh: Any) -> None:
        from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_module, distribute_tensor

        def partition(name: str, mod: nn.Module, mesh_: Any) -> None:
            if mod is not module:
                return
            for attr in ("weight", "bias"):
                p = getattr(mod, attr, None)
                if isinstance(p, nn.Parameter):
                    setattr(mod, attr, nn.Parameter(distribute_tensor(p.data, mesh_, [Shard(0)])))

        def inputs(mod: nn.Module, args: tuple, mesh_: Any) -> tuple:
            return (DTensor.from_local(args[0], mesh_, [Replicate()], run_check=False), *args[1:])

        distribute_module(module, mesh, partition, inputs)


def tensor_parallel(model: ArchModel, mesh: Any) -> list[str]:
    """Apply each op's tensor-parallel rule at the mesh's degree; returns the ops left whole (with
    why). A rule this execution cannot express yet (packed parts, replicated kv heads, collectives
    inside the op) is refused by `DistributedError`, naming the op."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

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
            _VocabParallel.embedding(module, mesh)
            continue
        if s.output == "vocab":
            _VocabParallel.head(module, mesh)
            model.vocab_parallel = True
            continue
        if s.reductions or any(sp.parts or any(r > 1 for r in sp.replicas) for sp in s.weights.values()):
            raise DistributedError(f"tensor parallelism of `{node.id}` ({node.op}) at tp={tp} needs "
                                   + ("collectives inside the op" if s.reductions else "packed or replicated splits")
                                   + ", which this execution does not run yet",
                                   "run it with tp=1 (fsdp/dp), or plan it with `archc plan`")
        for name, split in s.weights.items():
            layer, _, leaf = name.rpartition(".")
            sub = module.get_submodule(layer) if layer else None
            if not isinstance(sub, nn.Linear):
                raise DistributedError(f"`{node.id}.{name}` ({node.op}) is not a dense layer's weight; tensor "
                                       "parallelism of this op does not run yet", "run it with tp=1")
            if leaf == "weight":
                styles[f"{node.id}.{layer}"] = ColwiseParallel() if split.axis == 0 else RowwiseParallel()
    if styles:
        parallelize_module(model, mesh, styles)
    return whole


def data_parallel(model: ArchModel, mesh: Any, fsdp: bool) -> None:
    """FSDP2 (`fully_shard`): a unit per layer op (its forward runs, so its gathers fire), the
    embedding and the rest in the root unit (a tied head shares the embedding's table); or DDP
    (`replicate`)."""
    if not fsdp:
        from torch.distributed._composable.replicate import replicate

        replicate(model, device_mesh=mesh)
        return
    from torch.distributed.fsdp import fully_shard

    tied = {id(p) for n, p in model.named_parameters() if n.startswith(("embed", "lm_head"))}
    for nid, mod in model.op_modules():
        params = list(mod.parameters())
        if params and not any(id(p) in tied for p in params) and nid not in ("embed", "lm_head"):
            fully_shard(mod, mesh=mesh)
    fully_shard(model, mesh=mesh)


def loss_context(model: ArchModel) -> Any:
    """`loss_parallel()` when the logits are vocabulary-sharded DTensors, else nothing."""
    from torch.distributed.tensor.parallel import loss_parallel

    return loss_parallel() if getattr(model, "vocab_parallel", False) else nullcontext()


def clip_grad_norm(model: nn.Module, max_norm: float) -> float:
    """Clip the global gradient norm of a model whose parameters are DTensors on different meshes
    and plain tensors (`torch.nn.utils.clip_grad_norm_` will not mix them): each gradient's norm
    is computed over its whole (sharded) tensor."""
    from torch.distributed.tensor import DTensor

    squares = []
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    for g in grads:
        n = torch.linalg.vector_norm(g, 2.0)
        squares.append((n.full_tensor() if isinstance(n, DTensor) else n).float() ** 2)
    total = float(torch.stack(squares).sum().sqrt()) if squares else 0.0
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for g in grads:
            g.mul_(coef)
    return total


def full_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The whole model's weights on rank 0 (every rank must call this; others get {}), under the
    single-process names: what `archc generate` and `archc export` load."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


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
                   progress: bool = True, tokenizer: Any = None) -> Any:
    """`archc train`'s loop on one rank of a distributed run: the global batch is drawn from the
    same generator on every rank, each data-parallel rank trains on its rows, the loss of a step
    is the mean over the global batch's scored tokens (so a step equals the single-process step
    on that batch), gradients are clipped by their global norm. Rank 0 reports and writes the run
    folder: the consolidated weights (`last.safetensors`, single-process names), the config and
    the loss curve. (Resuming a distributed run needs distributed checkpoints: not built yet.)"""
    import json
    import time
    from dataclasses import asdict
    from pathlib import Path

    from torch.distributed.tensor import DTensor

    from archc.backends.torch.checkpoint import save_state
    from archc.backends.torch.train import RUN, TrainResult, accuracy, lr_at, make_optimizer, plot_losses
    from archc.data.tokenizer import write_tokenizer_files
    from archc.files.output import output_folder, write_text

    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    model.gradient_checkpointing = cfg.checkpointing
    opt = make_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, cfg))
    autocast = torch.autocast(rt.device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    dp_group = rt.mesh["dp"].get_group()
    losses: list[float] = []
    acc, tokens, t0 = 0.0, 0, time.perf_counter()
    lead = rt.rank == 0
    for step in range(cfg.steps):
        opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=rt.device)
        for _ in range(cfg.accum):
            ids, labels = task.batch(cfg.batch, cfg.seq, gen)
            ids, labels, scored = shard_batch(rt, model, ids, labels)
            ids, labels = ids.to(rt.device), labels.to(rt.device)
            with loss_context(model):
                with autocast:
                    loss, aux, logits = rank_loss(model, ids, labels, scored.to(rt.device))
                # data parallelism averages gradients over its ranks: the task loss is a sum over them
                scaled = loss * rt.deg.dp + (aux if aux is not None else 0.0)
                (scaled / cfg.accum).backward()
            total += loss.detach() / cfg.accum
            tokens += ids.numel() * rt.deg.dp
        dist.all_reduce(total, group=dp_group)
        if cfg.grad_clip > 0:
            clip_grad_norm(model, cfg.grad_clip)
        opt.step()
        sched.step()
        losses.append(float(total))
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            full = logits.detach().full_tensor() if isinstance(logits, DTensor) else logits.detach()
            acc = accuracy(full, labels, model.causal)
            if lead and progress:
                print(f"step {step + 1}/{cfg.steps}  loss {losses[-1]:.4f}  acc {acc:.3f}  "
                      f"{tokens / max(time.perf_counter() - t0, 1e-9):,.0f} tokens/s", file=sys.stderr)
    state = full_state_dict(model)
    if lead and out is not None:
        meta = {"spec": spec_name, "step": cfg.steps, "losses": losses, "val_losses": [], "config": asdict(cfg),
                "pipeline": getattr(model, "pipeline", "O0"),
                "parallel": {"tp": rt.deg.tp, "dp": rt.deg.dp, "fsdp": rt.deg.fsdp}}
        with output_folder(Path(out), RUN, force=True) as txn:
            save_state(state, txn.stage / "last.safetensors", meta)
            write_text(txn.stage / "train_config.json", json.dumps(asdict(cfg), indent=2) + "\n")
            plot_losses(losses, txn.stage / "loss.png", title=f"{spec_name} — {task.name}")
            if tokenizer is not None:
                write_tokenizer_files(tokenizer, txn.stage)
    model.eval()
    return TrainResult(cfg.steps, losses, acc, tokens / max(time.perf_counter() - t0, 1e-9),
                       Path(out) if out is not None else None)
