"""Declared weights: what an op's module holds, written once, in the op record.

The decode state is declared by the op record (`StateTensor`) and every backend reads it; the
weights are declared the same way. An op's `weights(p, ins)` rule returns its `Weight`s — name
inside the module, shape, precision class, init role, and the axes structured pruning cuts — and

* the torch module allocates its parameters from them (`OpModule.linear`, `.parameter`, …), and
  the builder refuses a module whose parameters differ from the declaration;
* the cost model counts parameters from them (`archc summary`);
* quantization reads each weight's class, the initializer its init role, pruning checks its
  slices against the declared axes;
* fusion passes pack weights (q/k/v into one projection) by concatenating declared weights, and
  load hooks map a packed layout back to the canonical one (docs/passes.md).

Names follow the module's `state_dict` keys relative to the node (`q_proj.weight`), so a weight's
full key is `<node id>.<name>`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

#: What a weight is to compression: the precision rule of DESIGN.md §3. Quantization reads the
#: class of each weight a quantizable ONNX node (MatMul, Gather, Conv) consumes and leaves the node
#: in fp32 when the class is kept. Classes, not op names, so that `--keep fp32:router` means the
#: same thing in every mixer.
TensorClass = Literal[
    "projection",      # a mixer's input/output projections (q/k/v/o, in_proj/out_proj, r/k/v/g)
    "ffn",             # feed-forward weights
    "expert",          # a mixture-of-experts expert's feed-forward weights
    "embedding",       # a token table (a tied lm_head reads it too)
    "head",            # an untied output head, classifier, pooler
    "router",          # MoE / MoD routers, ACT's halting unit: a top-k decision flips on small errors
    "norm",            # norm scales and shifts
    "ssm",             # an SSM's A, B, C, D parameters (continuous-time system)
    "discretization",  # the step size Δ: its projection and bias (Mamba's dt_proj, S4's log_dt)
    "decay",           # decays and bonuses of linear recurrences (RWKV's time_decay, GDN's α/β)
    "gate",            # exponential input/forget gates (xLSTM) whose errors compound through exp
    "conv",            # the short causal convolutions beside SSMs (kept by llama.cpp, TensorRT-LLM)
    "recurrent",       # weights applied to the recurrent state inside a loop (LSTM, GRU, sLSTM)
    "position",        # learned position tables and relative position biases
    "mix",             # token-shift interpolation weights (RWKV's time_mix / time_maa)
    "memory",          # learned memory tokens and latents (RMT, Perceiver, compressive memory)
    "features",        # fixed random features of a kernel approximation (Performer's ω, a buffer)
]

#: How `Init.default` fills a weight: `normal` N(0, 0.02); `residual` N(0, 0.02/√(2·mixers)),
#: GPT-2's scaled init of residual-branch output projections; `zeros`; `ones`; `own`: the op's
#: module sets it in its own `init_weights` (documented there: Mamba's A_log, RWKV's decays, …).
InitRole = Literal["normal", "residual", "zeros", "ones", "own"]


@dataclass(frozen=True)
class Weight:
    """One tensor an op's module holds (a parameter, or a persistent buffer with `buffer`)."""

    name: str
    shape: tuple[int, ...]
    cls: TensorClass
    init: InitRole = "normal"
    #: (unit kind, axis) pairs: the axes structured pruning cuts for each kind of unit of the op's
    #: prune rule (`PruneAxis.kind`); a test checks the rule's slices against them.
    cuts: tuple[tuple[str, int], ...] = ()
    #: A persistent buffer (Performer's random features): saved, never trained, not counted.
    buffer: bool = False
    #: A fused op's packed weight: the canonical weights it is, concatenated along axis 0, as
    #: (name, rows) pairs (`gate_up_proj.weight` packs `gate_proj.weight` and `up_proj.weight`).
    #: Checkpoints store the canonical ones (the torch backend's load hooks).
    packs: tuple[tuple[str, int], ...] = ()

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def renamed(self, name: str) -> Weight:
        return replace(self, name=name)


def dense(name: str, d_in: int, d_out: int, cls: TensorClass, bias: bool = False, init: InitRole = "normal",
          cuts_out: tuple[str, ...] = (), cuts_in: tuple[str, ...] = (),
          bias_init: InitRole = "zeros") -> tuple[Weight, ...]:
    """A dense layer `name` as `nn.Linear` holds it: `name.weight` [d_out, d_in] and, with `bias`,
    `name.bias` [d_out] (zeros unless `bias_init` says). `cuts_out` / `cuts_in` name the unit
    kinds that remove its rows / columns (its bias follows the rows)."""
    rows = tuple((k, 0) for k in cuts_out)
    out = (Weight(f"{name}.weight", (d_out, d_in), cls, init, rows + tuple((k, 1) for k in cuts_in)),)
    if bias:
        out += (Weight(f"{name}.bias", (d_out,), cls, bias_init, rows),)
    return out


def conv1d(name: str, channels: int, kernel: int, cls: TensorClass, bias: bool = True, out: int | None = None,
           groups: int | None = None, init: InitRole = "own", cuts: tuple[str, ...] = ()) -> tuple[Weight, ...]:
    """A 1-D convolution as `nn.Conv1d` holds it: `name.weight` [out, channels/groups, kernel] and
    `name.bias` [out]; depthwise (groups = channels = out) unless told otherwise. Its init is the
    op's own by default (PyTorch's uniform, as mamba_ssm keeps it); the bias follows an own init
    and is zero otherwise."""
    out = channels if out is None else out
    groups = channels if groups is None else groups
    rows = tuple((k, 0) for k in cuts)
    ws = (Weight(f"{name}.weight", (out, channels // groups, kernel), cls, init, rows),)
    if bias:
        ws += (Weight(f"{name}.bias", (out,), cls, "own" if init == "own" else "zeros", rows),)
    return ws


def packed(name: str, parts: Iterable[Weight]) -> Weight:
    """The weights `parts` (same class, same shape but for axis 0) concatenated along axis 0 as
    one weight `name`, which records what it packs. Packing a dense layer's weights packs its
    biases separately (`packed("qkv_proj.bias", ...)`)."""
    parts = tuple(parts)
    first = parts[0]
    assert all(p.shape[1:] == first.shape[1:] and p.cls == first.cls for p in parts), parts
    init = first.init if all(p.init == first.init for p in parts) else "own"
    return Weight(name, (sum(p.shape[0] for p in parts), *first.shape[1:]), first.cls, init,
                  packs=tuple((p.name, p.shape[0]) for p in parts))


def pack_dense(weights: Iterable[Weight], name: str, parts: tuple[str, ...]) -> tuple[Weight, ...]:
    """`weights` with the dense layers `parts` (`("q_proj", "k_proj", "v_proj")`) packed into one
    layer `name` (`qkv_proj`): its weight packs their weights' rows, its bias their biases, and it
    stands where the first part stood. A fused op is not pruned (`archc prune` works on the
    canonical build), so the result carries no cuts."""
    weights = tuple(weights)
    by_name = {w.name: w for w in weights}
    out: list[Weight] = []
    for w in weights:
        layer, _, leaf = w.name.rpartition(".")
        if layer == parts[0]:
            out.append(packed(f"{name}.{leaf}", (by_name[f"{p}.{leaf}"] for p in parts)))
        elif layer not in parts:
            out.append(w)
    return tuple(replace(w, cuts=()) for w in out)


def under(prefix: str, weights: Iterable[Weight]) -> tuple[Weight, ...]:
    """`weights` of a submodule `prefix` (a MoE's `experts.3`), named from the op's module."""
    return tuple(w.renamed(f"{prefix}.{w.name}") for w in weights)


def parameter_count(weights: Iterable[Weight]) -> int:
    """Trainable parameters: every declared weight but buffers."""
    return sum(w.numel for w in weights if not w.buffer)
