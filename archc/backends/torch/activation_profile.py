"""What archc's PyTorch modules keep for the backward pass, measured per op: the planner's
activations for an eager run (`archc plan --activations eager`).

The cost model's `act_bytes` is what fused kernels keep (flash attention, fused scans, norms and
SwiGLU); the eager modules keep more — a sequential scan every step's state, RMSNorm its fp32
upcast, SwiGLU its gate, up projection and product (docs/distributed.md has the table). Rather
than a second hand-written formula per op that drifts from the code, this runs one training
forward of the built model on fake tensors (`FakeTensorMode`: shapes and dtypes, no memory, no
arithmetic — a 70B spec costs what a tiny one does) under `saved_tensors_hooks`, and charges
every tensor autograd saves, once per storage and parameters excluded, to the op node whose
forward was running; what is saved between ops (the loss, the interpreter's inline arithmetic)
goes to the op that ran last. The fake device is the CPU, so attention takes the fused kernel
PyTorch's dispatcher picks there (it keeps the output and the log-sum-exp, as CUDA's does).

A routed MoE's dispatch is data-dependent (how many tokens each expert gets); the probe gives
every expert its balanced share of the N·top_k rows, the load the planner assumes. Ops skip their
data-dependent early exits (`shapes_only`): adaptive computation time runs every step, its
memory's worst case.

Sequences up to `EXACT` tokens are measured at their length; a longer one at three probe
lengths, fitting each node's bytes per sequence as c + α·T + β·T² (a per-sequence constant,
per-token terms, and the T² of an attention that writes out its scores) and evaluated there.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from archc.backends.torch.context import shapes_only
from archc.ir.graph import Graph
from archc.ops.registry import ShapeError

#: Sequences measured at their own length; longer ones are fitted from `PROBES`.
EXACT = 512
PROBES = (128, 256, 512)

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class ProfileError(Exception):
    """A forward that cannot run on fake tensors (an op whose shapes depend on values)."""


class SavedBytes:
    """Bytes of the tensors autograd saves inside the context, once per storage, charged to a
    key `charge()` names at the time (parameters and buffers in `exclude` are not activations)."""

    def __init__(self, exclude: Iterable[Tensor] = ()) -> None:
        self._excluded = {_storage_key(t) for t in exclude}
        self._seen: dict[int, tuple[int, str]] = {}
        self.charge: Callable[[], str] = lambda: ""
        self._keep: list[Tensor] = []  # the storages stay alive, so their keys stay unique

    def pack(self, t: Tensor) -> Tensor:
        local = _local(t)
        key = _storage_key(local)
        if _is_weight(t) or _is_weight(local):  # also weights gathered after `exclude` was taken (FSDP's)
            return t
        if key not in self._excluded and key not in self._seen:
            self._seen[key] = (local.untyped_storage().nbytes(), self.charge())
            self._keep.append(local)
        return t

    @contextmanager
    def counting(self) -> Iterator[SavedBytes]:
        with torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t):
            yield self

    def by_key(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for nbytes, key in self._seen.values():
            out[key] += nbytes
        return dict(out)

    @property
    def total(self) -> int:
        return sum(n for n, _ in self._seen.values())


def _is_weight(t: Tensor) -> bool:
    """A parameter, or a view of one (the transposed weight a matmul saves)."""
    return isinstance(t, torch.nn.Parameter) or isinstance(t._base, torch.nn.Parameter)


def _local(t: Tensor) -> Tensor:
    """A DTensor's local shard (what the rank holds), else the tensor."""
    return t._local_tensor if hasattr(t, "_local_tensor") else t


def _storage_key(t: Tensor) -> int:
    # the StorageImpl's address: views share it, and it is defined for fake and meta tensors too
    return _local(t).untyped_storage()._cdata


def charge_to_ops(model: torch.nn.Module, counter: SavedBytes) -> list[torch.utils.hooks.RemovableHandle]:
    """Charge what `counter` sees to the top-level op node running (or, between ops, the one that
    ran last; before the first, the first). Returns the hooks' handles."""
    running: list[str] = []
    ops = model.op_modules()
    last = [ops[0][0]] if ops else [""]

    def enter(nid: str, *_: object) -> None:
        running.append(nid)

    def leave(*_: object) -> None:
        last[0] = running.pop()

    counter.charge = lambda: running[0] if running else last[0]
    handles = []
    for nid, mod in ops:
        handles.append(mod.register_forward_pre_hook(functools.partial(enter, nid)))
        handles.append(mod.register_forward_hook(leave))
    return handles


def training_forward(model: torch.nn.Module, batch: int, seq: int, device: str = "cpu") -> Tensor:
    """One training forward and the head's loss, on zero token ids and zero labels of the shape
    the head scores (positions, sequences or regression targets)."""
    ids = torch.zeros(batch, seq, dtype=torch.long, device=device)
    inputs = {n: ids for n in model.input_names}
    logits = model(**inputs).logits
    if model.head_loss is None:
        return logits.float().sum()
    shape = logits.shape[:-1] if logits.dim() == 3 else logits.shape[:1]
    labels = torch.zeros(shape, device=device,
                         dtype=torch.float32 if model.head_loss == "regression" else torch.long)
    return model.loss(logits, labels)


def _balanced_experts(mod: torch.nn.Module, h: Tensor, gates: Tensor, top_i: Tensor) -> Tensor:
    """MoE dispatch with every expert given ⌈N·top_k / E⌉ of the rows (a static shape for fake
    tensors): what a balanced router's dispatch keeps."""
    out = torch.zeros_like(h)
    n, k = h.shape[0], top_i.shape[-1]
    rows = min(n, -(-n * k // len(mod.experts)))
    idx = torch.arange(rows, device=h.device)
    for e, expert in enumerate(mod.experts):
        out.index_add_(0, idx, expert(h[idx]) * gates[idx, e:e + 1])
    return out


@contextmanager
def _fake_group(tp: int) -> Iterator[Any]:
    """A one-process mesh of `tp` ranks over torch's fake process group (collectives return at
    once; what torchtitan's memory estimator uses), or None for tp = 1."""
    if tp == 1:
        yield None
        return
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if dist.is_initialized():
        raise ProfileError("a process group is running: measure tensor-parallel profiles outside a distributed run")
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=tp)
    try:
        yield init_device_mesh("cpu", (tp,), mesh_dim_names=("tp",))
    finally:
        dist.destroy_process_group()



def measure(graph: Graph, seq: int, dtype: str = "fp32", tp: int = 1, batch: int = 1) -> dict[str, int]:
    """Bytes each top-level node keeps for backward on one rank over `batch` sequences of `seq`
    tokens, at `dtype`, on fake tensors (O0: the graph's own node ids, as the planner's units).
    With `tp` > 1 the model is split as `archc train --nproc` splits it (its tensor-parallel
    rules, sequence parallelism on), on a fake process group."""
    from torch._subclasses.fake_tensor import (
        DataDependentOutputException,
        DynamicOutputShapeException,
        FakeTensorMode,
    )

    from archc.backends.torch import build
    from archc.backends.torch.distributed import DistributedError, loss_context, tensor_parallel

    model = build(graph, device="meta", pipeline="O0").to(TORCH_DTYPES[dtype]).train()
    for nid, mod in model.op_modules():
        if graph.nodes[nid].op == "moe":
            mod.run_experts = functools.partial(_balanced_experts, mod)
    with _fake_group(tp) as mesh, FakeTensorMode(allow_non_fake_inputs=True):
        model = model.to_empty(device="cpu")
        if mesh is not None:
            try:
                tensor_parallel(model, mesh, sequence=True)
            except DistributedError as e:
                raise ProfileError(f"tensor parallelism of degree {tp} does not run: {e.message}") from None
            except (ValueError, ShapeError) as e:  # a shape the degree does not divide (heads, groups)
                raise ProfileError(f"tensor parallelism of degree {tp} does not split this model: {e}") from None
        counter = SavedBytes([*model.parameters(), *model.buffers()])
        charge_to_ops(model, counter)
        try:
            with loss_context(model), counter.counting(), shapes_only():
                training_forward(model, batch, seq)
        except (DataDependentOutputException, DynamicOutputShapeException) as e:
            raise ProfileError(f"{graph.name}'s forward reads tensor values ({e.func}) and cannot run on "
                               "fake tensors") from None
    return counter.by_key()


def activation_profile(graph: Graph, seq: int, dtype: str = "bf16", tp: int = 1, batch: int = 1) -> dict[str, float]:
    """Each top-level node's activation bytes per token on one rank of a `tp`-way
    tensor-parallel group, for microbatches of `batch` sequences of `seq` tokens: measured at
    `seq` up to `EXACT` tokens, else fitted from `PROBES` (module docstring). What a call keeps
    once whatever its batch (RoPE's tables, S4's kernel) is spread over its tokens, so a profile
    of batch 1 is an upper bound for larger microbatches. ProfileError when it cannot be measured."""
    if dtype not in TORCH_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; one of {sorted(TORCH_DTYPES)}")
    if seq <= EXACT:
        return {nid: b / (batch * seq) for nid, b in measure(graph, seq, dtype, tp, batch).items()}
    samples = [measure(graph, t, dtype, tp, batch) for t in PROBES]
    a = torch.tensor([[1.0, t, t * t] for t in PROBES], dtype=torch.float64)
    out = {}
    for nid in set().union(*samples):
        y = torch.tensor([float(s.get(nid, 0)) for s in samples], dtype=torch.float64)
        c, alpha, beta = torch.linalg.solve(a, y).tolist()
        out[nid] = max(0.0, c + alpha * seq + beta * seq * seq) / (batch * seq)
    return out


def activation_profiles(graph: Graph, seq: int, dtype: str = "bf16", degrees: Iterable[int] = (1, 2, 4, 8),
                        batch: int = 1) -> dict[int, dict[str, float]]:
    """`activation_profile` at each tensor-parallel degree that runs (the sequence divides among
    its ranks and every rule applies); the planner scales the tp = 1 profile for the others.
    The split models are measured in a child process: DTensor caches what it propagated per
    mesh, and a later real mesh of the same shape compares equal to the fake one. ProfileError
    when even tp = 1 cannot be measured."""
    out = {1: activation_profile(graph, seq, dtype, batch=batch)}
    split = [tp for tp in degrees if tp > 1 and all(t % tp == 0 for t in ((seq,) if seq <= EXACT else PROBES))]
    if split:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            out.update(pool.submit(_split_profiles, graph, seq, dtype, split, batch).result())
    return out


def _split_profiles(graph: Graph, seq: int, dtype: str, degrees: list[int], batch: int) -> dict[int, dict[str, float]]:
    out = {}
    for tp in degrees:
        try:
            out[tp] = activation_profile(graph, seq, dtype, tp, batch)
        except ProfileError:
            continue
    return out
