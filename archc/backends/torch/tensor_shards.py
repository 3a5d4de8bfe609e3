"""Tensor parallelism of the ops DTensor's projection styles cannot express: a rank runs the op
*pruned to its units* (the op's own prune rule, tools/tp_as_prune.py and tests/ops/test_sharding.py
show that a shard is exactly that), loaded with the slices its sharding rule cuts.

DTensor's `ColwiseParallel` / `RowwiseParallel` split one projection along one axis. Mamba's and
Mamba-2's in_proj pack z, x, B, C and Δ rows (each part cut separately, B/C groups replicated on
the ranks whose heads read them), their depthwise conv runs on a rank's own channels, Mamba's
x_proj reads every inner channel (its output is all-reduced inside the op), Mamba-2's gated norm
spans a group's channels, RWKV's decays are plain parameters. For such an op a `LocalShard`:

* builds the op's module at the rank's local sizes (the prune axis's parameters for the rank's
  contiguous units; Mamba-2's groups as the rank holds them) and loads it with `Split.indices` of
  every declared weight (and the whole op's buffers: Performer's random features); the original module keeps those parameters under their names, and its
  `forward` runs the local module between Megatron's two conjugate operators: `f` (identity
  forward, all-reduce of the input's gradient backward) and `g` (all-reduce of the partial
  outputs forward, identity backward), then adds the biases applied once after the reduction;
* runs the collectives inside the op the rule names (`Reduction`): Mamba's x_proj output,
  Mamba-2's per-group sums of squares and mLSTM's gate pre-activations (its gates hold every
  head's row for the rank's columns: `_ReducedGate`) are all-reduced, forward and backward;
* after backward, sums over the tensor-parallel ranks the gradients of what the ranks hold in
  common — a weight the rule replicates inside the op, a B/C group's rows on each rank that reads
  it — so that every copy takes the same step (`sync_grads`);
* gathers a parameter's shards back into the single-process tensor (`full`), un-permuting the
  packed parts, for the consolidated checkpoint, the global gradient norm and the distributed
  train state (`scatter` puts one back).
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from archc.backends.torch.model import ArchModel, build_op
from archc.ir.sharding import Sharding, Split
from archc.ops.registry import REGISTRY


class ShardError(Exception):
    """An op whose local shard this execution cannot build; the message names it."""


def _identity(x: Tensor, group: Any) -> Tensor:
    return x


def _sum(x: Tensor, group: Any) -> Tensor:
    """The sum over the group's ranks (an all-reduce, on a copy)."""
    x = x.contiguous().clone()
    dist.all_reduce(x, group=group)
    return x


def _gather_seq(x: Tensor, group: Any) -> Tensor:
    """[B, T/t, …] on each rank -> [B, T, …], the ranks' chunks in order."""
    t = dist.get_world_size(group)
    xs = x.movedim(1, 0).contiguous()
    out = xs.new_empty((t * xs.shape[0], *xs.shape[1:]))
    dist.all_gather_into_tensor(out, xs, group=group)
    return out.movedim(0, 1)


def _scatter_seq(y: Tensor, group: Any) -> Tensor:
    """[B, T, …] partial sums on each rank -> this rank's chunk [B, T/t, …] of their sum."""
    t = dist.get_world_size(group)
    ys = y.movedim(1, 0).contiguous()
    out = ys.new_empty((ys.shape[0] // t, *ys.shape[1:]))
    dist.reduce_scatter_tensor(out, ys, group=group)
    return out.movedim(0, 1)


class _Conjugate(torch.autograd.Function):
    """A collective whose gradient is another: `forward(x)` going in, `backward(g)` coming back.
    The pairs a shard needs (Megatron's conjugate operators):

    * `f` = (identity, sum): the replicated input enters each rank's shard, its gradient a sum;
    * `g` = (sum, identity): the shards' partial outputs summed, each rank's gradient the whole;
    * sequence parallelism's `f` = (gather, reduce-scatter) and `g` = (reduce-scatter, gather):
      the same, with the residual stream split by sequence between the ops;
    * inside the op = (sum, sum): a sum whose users are the rank's own units, so that each rank's
      gradient is its units' part of the whole (Mamba's x_proj output, Mamba-2's sums of squares)."""

    @staticmethod
    def forward(fctx: Any, x: Tensor, group: Any, forward: Any, backward: Any) -> Tensor:
        fctx.group, fctx.backward_op = group, backward
        y = forward(x, group)
        return y.view_as(y) if y is x else y

    @staticmethod
    def backward(fctx: Any, g: Tensor) -> tuple[Tensor, None, None, None]:
        return fctx.backward_op(g, fctx.group), None, None, None


#: (going in, coming back) of a shard's input and output, replicated or sequence-split between ops
ENTER, LEAVE = (_identity, _sum), (_sum, _identity)
ENTER_SEQUENCE, LEAVE_SEQUENCE = (_gather_seq, _scatter_seq), (_scatter_seq, _gather_seq)


def _all_reduce(t: Tensor, group: Any) -> Tensor:
    return _Conjugate.apply(t, group, _sum, _sum)


@dataclass
class Held:
    """One parameter of a local shard: the rule's split (None: the op replicates it), the
    single-process shape, and this rank's indices along the split axis."""

    split: Split | None
    shape: tuple[int, ...]
    indices: list[int]
    #: the positions in the rank's shard it writes into a gathered tensor (a piece held by several
    #: ranks is written by the first of them); unused for a replicated weight
    writes: list[int]


class LocalShard:
    """The shards of one op on one rank (see the module docstring)."""

    def __init__(self, model: ArchModel, node: Any, mod: nn.Module, s: Sharding, group: Any) -> None:
        self.node, self.mod, self.s, self.group = node, mod, s, group
        self.t, self.rank = s.degree, dist.get_rank(group)
        graph = model.graph
        in_types = graph.input_types(node)
        record = REGISTRY[node.op]
        p = record.params(**node.params)
        axis = next((a for a in record.prune(p, in_types) if a.kind == s.unit), None) if record.prune else None
        if axis is None or axis.units != s.units:
            raise ShardError(f"`{node.id}` ({node.op}): no prune axis of its {s.unit} to build a rank's shard from")
        mine = [u for u in range(s.units) if s.ranks_of_unit(u) == self.rank]
        params = {**node.params, **axis.params(mine), **_local_params(node.op, p, in_types, s)}
        local = build_op(node.op, params, in_types, node.type)
        if node.op == "mlstm":  # the gates read every head's columns: each rank holds all their rows
            for gate in ("igate", "fgate"):
                setattr(local, gate, _ReducedGate(getattr(mod, gate), len(mine) * p.head_dim_for(in_types[0].width),
                                                  slice(mine[0], mine[-1] + 1), group))
        if _device(local) != _device(mod):  # (no `.to` on the same device: fake tensors cannot be swapped)
            local = local.to(_device(mod))
        self.held: dict[str, Held] = {}
        whole = dict(mod.named_parameters())
        with torch.no_grad():
            for name, lp in local.named_parameters():
                full = whole[name]
                split = s.weights.get(name)
                if split is None:  # whole on every rank: rank 0's copy is the gathered one
                    value, idx, writes = full, [], []
                else:
                    idx = split.indices(full.shape[split.axis], self.t, self.rank)
                    value = full.index_select(split.axis, torch.tensor(idx, device=full.device))
                    writes = _written(split, full.shape[split.axis], self.t, self.rank)
                if tuple(value.shape) != tuple(lp.shape):
                    raise ShardError(f"`{node.id}` ({node.op}): {name} of the rank's shard is {tuple(lp.shape)}, "
                                     f"the rule cuts {tuple(value.shape)}")
                lp.copy_(value)
                self.held[name] = Held(split, tuple(full.shape), idx, writes)
            # buffers (Performer's random features): the whole op's, cut as the rule cuts them
            whole_buffers = dict(mod.named_buffers())
            for name, lb in local.named_buffers():
                if name not in whole_buffers:
                    continue
                value, split = whole_buffers[name], s.weights.get(name)
                if split is not None:
                    value = value.index_select(split.axis, torch.tensor(
                        split.indices(value.shape[split.axis], self.t, self.rank), device=value.device))
                if tuple(value.shape) == tuple(lb.shape):
                    lb.copy_(value)
        # biases the rule applies once, after the reduction: the original module keeps them whole
        # a bias the rule applies once, after the reduction: its layer leaves it out, the shard's
        # forward adds it (whole, and its gradient is the whole one on every rank)
        self.after: list[str] = []
        for name in s.after_reduce:
            layer, _, leaf = name.rpartition(".")
            owner = local.get_submodule(layer) if layer else local
            if isinstance(owner, nn.Linear) and leaf == "bias" and owner.bias is not None:
                owner.forward = types.MethodType(lambda m, x: nn.functional.linear(x, m.weight), owner)
                self.held.pop(name, None)
                self.after.append(name)
        # the op's module becomes the rank's shard in place — the same object (the model's plan
        # and FSDP's units refer to it) with the local module's sizes, submodules and parameters
        mod.__dict__.update({k: v for k, v in local.__dict__.items() if not k.endswith("_hooks")})
        self.local = mod
        #: sequence parallelism: the input arrives as the rank's sequence chunk, the output leaves so
        self.sequence = False
        _reductions(node.op, mod, s, group, self.rank)
        mod._tp_shard = self  # type: ignore[attr-defined]
        mod.forward = types.MethodType(_sharded_forward, mod)

    def full(self, name: str, value: Tensor) -> Tensor:
        """The single-process tensor of parameter `name` from every rank's `value` (its shard of
        the parameter, or of a tensor shaped like it: a gradient, an optimizer moment). Every rank
        of the group calls it and gets the whole tensor."""
        h = self.held[name]
        if h.split is None:
            out = value.detach().clone() if self.rank == 0 else torch.zeros_like(value)
        else:
            out = value.new_zeros(h.shape)
            if h.writes:
                at = torch.tensor(h.writes, device=value.device)
                idx = torch.tensor(h.indices, device=value.device).index_select(0, at)
                out.index_copy_(h.split.axis, idx, value.detach().index_select(h.split.axis, at))
        dist.all_reduce(out, group=self.group)
        return out

    def scatter(self, name: str, full: Tensor) -> Tensor:
        """This rank's shard of the single-process tensor `full` of parameter `name`."""
        h = self.held[name]
        if h.split is None:
            return full
        return full.index_select(h.split.axis, torch.tensor(h.indices, device=full.device))

    def sync_grads(self) -> None:
        """Sum over the ranks the gradients of what several ranks hold: a replicated weight, and
        the rows of a piece replicated on several ranks (each saw only its own heads' use)."""
        from torch.distributed.tensor import DTensor, distribute_tensor

        for name, h in self.held.items():
            p = self.local.get_parameter(name)
            if p.grad is None:
                continue
            if h.split is None:  # FSDP shards it alike on every tensor-parallel rank
                g = p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad
                dist.all_reduce(g, group=self.group)
            elif h.split.replicas and any(r > 1 for r in h.split.replicas):
                g = p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad
                idx = torch.tensor(h.indices, device=g.device)
                total = g.new_zeros(h.shape).index_add_(h.split.axis, idx, g)
                dist.all_reduce(total, group=self.group)
                g = total.index_select(h.split.axis, idx)
                if isinstance(p.grad, DTensor):
                    g = distribute_tensor(g, p.grad.device_mesh, p.grad.placements).to_local()
                    p.grad.to_local().copy_(g)
                else:
                    p.grad.copy_(g)


class _ReducedGate(nn.Module):
    """mLSTM's input or forget gate on a rank: `weight` [H, 3·E_rank] (every head's row, the
    rank's q, k and v columns) makes the rank's part of all H pre-activations, which are summed
    over the ranks (forward and backward: each rank's gradient is then its heads' part of the
    whole); the rank keeps its heads' and adds the bias (whole on every rank; `sync_grads` sums
    its gradient, which each rank has for its own heads)."""

    def __init__(self, whole: nn.Linear, width: int, heads: slice, group: Any) -> None:
        super().__init__()
        rows = whole.weight.shape[0]
        self.weight = nn.Parameter(whole.weight.new_empty(rows, 3 * width))
        self.bias = nn.Parameter(whole.bias.new_empty(rows))
        self.heads, self.group = heads, group

    def forward(self, qkv: Tensor) -> Tensor:
        pre = _all_reduce(nn.functional.linear(qkv, self.weight), self.group)
        return pre[..., self.heads] + self.bias[self.heads]


def _sharded_forward(self: nn.Module, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    shard: LocalShard = self._tp_shard
    enter, leave = (ENTER_SEQUENCE, LEAVE_SEQUENCE) if shard.sequence else (ENTER, LEAVE)
    y = type(self).forward(self, _Conjugate.apply(x, shard.group, *enter), *args, **kwargs)
    y = _Conjugate.apply(y, shard.group, *leave)
    for name in shard.after:
        y = y + self.get_parameter(name)
    return y


def _device(mod: nn.Module) -> torch.device:
    return next(mod.parameters()).device


def _written(split: Split, size: int, degree: int, rank: int) -> list[int]:
    """The positions in rank `rank`'s shard (in `Split.indices` order) of the pieces it is the
    first holder of: each part's piece is held by `replicas` consecutive ranks."""
    parts = split.parts or (size,)
    out, at = [], 0
    for i, part in enumerate(parts):
        reps = split.replicas[i] if split.replicas else 1
        n = part // (degree // reps)
        if rank % reps == 0:
            out.extend(range(at, at + n))
        at += n
    return out


def _local_params(op: str, p: Any, in_types: list, s: Sharding) -> dict[str, Any]:
    """Parameters of the rank's shard beyond the prune axis's: Mamba-2's B/C groups as the rank
    holds them (G/t of them, or the one group its heads read)."""
    if op == "mamba2":
        return {"groups": max(1, p.groups // s.degree)}
    return {}


def _reductions(op: str, local: nn.Module, s: Sharding, group: Any, rank: int) -> None:
    """The collectives inside the op its rule names: Mamba's x_proj output (Δ's rank, B and C, read
    from every inner channel) and Mamba-2's per-group sums of squares when a group spans ranks."""
    if not s.reductions:
        return
    if op == "mamba":
        local.x_proj.register_forward_hook(lambda m, i, out: _all_reduce(out, group))
        return
    if op == "mamba2":
        groups = local.params.groups if hasattr(local, "params") else 1
        total = s.reductions[0].elements  # G: one sum of squares a group and token
        norm = local.norm
        spans = s.degree * groups // total  # ranks sharing one group
        mine = rank // spans if spans > 1 else rank

        def forward(y: Tensor, z: Tensor, _norm: nn.Module = norm) -> Tensor:
            h = y.float() * torch.nn.functional.silu(z.float())
            sums = h.pow(2).sum(-1, keepdim=True)  # this rank's channels of its group
            slot = torch.zeros(*sums.shape[:-1], total, dtype=sums.dtype, device=sums.device)
            slot = slot.index_copy(-1, torch.tensor([mine], device=sums.device), sums)
            width = h.shape[-1] * spans
            ss = _all_reduce(slot, group)[..., mine:mine + 1]
            h = h * torch.rsqrt(ss / width + _norm.eps)
            return _norm.weight * h.to(z.dtype)

        norm.forward = forward
        return
    if op == "mlstm":  # the gates' pre-activations: summed inside `_ReducedGate`
        return
    raise ShardError(f"the collectives inside `{op}` ({', '.join(r.what for r in s.reductions)}) do not run yet")


#: ops whose modules read their local sizes from their projections' widths, so that DTensor's
#: projection styles run them unchanged (the attention op, the FFNs, a MoE's experts); the others
#: run as local shards
DTENSOR_STYLED = ("attention", "swiglu", "mlp", "moe", "rwkv_channel_mix")

#: ops whose collectives inside (`Sharding.reductions`) `_reductions` runs
REDUCED = ("mamba", "mamba2", "mlstm")


def needs_local(s: Sharding) -> bool:
    """Whether a sharding needs a local shard rather than DTensor's projection styles, from the rule
    alone (a plain parameter — no layer — is cut, parts are packed or replicated, or a collective
    runs inside); `tensor_parallel` also sends there any split weight that is not a dense layer's."""
    return bool(s.reductions) or any(sp.parts or any(r > 1 for r in sp.replicas) or "." not in name
                                     for name, sp in s.weights.items())


def unsupported(graph: Any, node: Any, s: Sharding) -> str:
    """What of the op's tensor parallelism this execution does not run ('' when it runs all of it):
    collectives inside an op other than Mamba's and Mamba-2's, or a local shard of an op with no
    prune axis of the rule's units (the shard is built as the op pruned to them)."""
    if s.reductions and node.op not in REDUCED:
        return "its collectives inside the op (" + ", ".join(r.what for r in s.reductions) + ")"
    if needs_local(s) or node.op not in DTENSOR_STYLED:
        record = REGISTRY[node.op]
        axes = record.prune(record.params(**node.params), graph.input_types(node)) if record.prune else ()
        if not any(a.kind == s.unit and a.units == s.units for a in axes):
            return f"a rank's shard built as the op pruned to its {s.unit}, and the op has no prune rule for them"
    return ""


def sync_grads(model: nn.Module) -> None:
    """`LocalShard.sync_grads` of every op run as local shards."""
    for mod in model.modules():
        shard = getattr(mod, "_tp_shard", None)
        if shard is not None:
            shard.sync_grads()


def full_tensor(model: nn.Module, name: str, value: Tensor) -> Tensor:
    """The single-process tensor of parameter `name` (or of a tensor shaped like it) from what this
    rank holds — a local shard's piece, FSDP's shard of it, a DTensor, or the tensor itself.
    Collective over the ranks holding pieces: every rank calls it for the same names in order."""
    from torch.distributed.tensor import DTensor

    if isinstance(value, DTensor):
        value = value.full_tensor()
    held = shards(model).get(name)
    return held[0].full(held[1], value) if held is not None else value


def shards(model: nn.Module) -> dict[str, tuple[LocalShard, str]]:
    """Model parameter name -> (its op's LocalShard, the name inside the op), for every local
    shard's parameter."""
    out: dict[str, tuple[LocalShard, str]] = {}
    for prefix, mod in model.named_modules():
        shard = getattr(mod, "_tp_shard", None)
        if shard is not None:
            for name in shard.held:
                out[f"{prefix}.{name}" if prefix else name] = (shard, name)
    return out
