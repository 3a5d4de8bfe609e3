"""Parallelism rules: how an op's declared weights and state split across the ranks of a group.

Beside the precision class and the prune cuts, an op record carries a parallelism rule
(`OpDef.parallel`, DESIGN.md §3): from the op's parameters and input types, a `Parallel` that says

* how the op splits under **tensor parallelism** (`tensor(degree)` → `Sharding`): which unit it
  cuts (attention's heads or kv-head groups, an FFN's hidden units, Mamba's inner channels, a
  vocabulary), how each declared weight and state tensor is cut (`Split`; a weight not named is
  replicated), how the ranks' outputs combine (`output`), and the collectives the op needs inside
  (`Reduction`: Mamba's x_proj reads every inner channel, Mamba-2's gated norm spans its group);
* how it splits under **expert parallelism** (`expert(degree)`: a MoE's experts, owned whole);
* how it runs when the **sequence** is split across ranks (`context`): nothing to do for ops that
  mix no positions, a ring of key/value blocks for softmax attention, the recurrent state handed
  from rank to rank for the linear recurrences (their chunked forms already scan from a state).

A `Sharding` is index arithmetic only, like the prune rule: the planner reads the local sizes
(memory, FLOPs, collective volumes), the torch backend cuts tensors by `Split.indices`. A rule
that cannot split at some degree (3 heads over 2 ranks) raises `CannotShard` with the reason,
and the planner does not offer that degree. An op without a rule is replicated (`REPLICATED`), and
`archc plan` lists it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from archc.ir.weights import Weight

#: How ranks' outputs of a tensor-parallel op combine: `sum` — each holds a partial sum (a
#: row-parallel projection), all-reduced (reduce-scattered under sequence parallelism); `vocab` —
#: each holds its slice of the vocabulary's logits, kept split (the cross-entropy is computed in
#: parallel: an all-reduce of each token's max, Σexp and target logit); `all_to_all` — tokens go to
#: the ranks of their experts and come back (expert parallelism).
Output = Literal["sum", "vocab", "all_to_all"]

#: How an op computes when each rank holds a contiguous chunk of the sequence (context
#: parallelism): `pointwise` — it mixes no positions; `ring` — softmax attention: key/value blocks
#: pass around the ring of ranks; `state` — a recurrence: each rank scans its chunk from the declared
#: state the previous rank hands it; `none` — not supported (the reason is `Parallel.why_context`).
Context = Literal["pointwise", "ring", "state", "none"]


class CannotShard(Exception):
    """A rule cannot split the op at the asked degree; the message says why (the planner shows it)."""


@dataclass(frozen=True)
class Split:
    """How one tensor is cut along `axis` across `degree` ranks.

    The axis is a concatenation of `parts` (sizes; `()` is one part, the whole axis), as packed
    projections are (Mamba's in_proj is [x | z]); each part is cut into equal contiguous pieces and
    rank r holds its piece of every part. `replicas[i]` (default 1) consecutive ranks hold the same
    piece of part i: GQA's key/value heads when there are fewer of them than ranks, Mamba-2's B/C
    groups likewise."""

    axis: int
    parts: tuple[int, ...] = ()
    replicas: tuple[int, ...] = ()

    def _parts(self, size: int) -> tuple[int, ...]:
        parts = self.parts or (size,)
        assert sum(parts) == size, (self, size)
        return parts

    def _replicas(self, i: int) -> int:
        return self.replicas[i] if self.replicas else 1

    def local_size(self, size: int, degree: int) -> int:
        """The length of `axis` one rank holds."""
        return sum(p * self._replicas(i) // degree for i, p in enumerate(self._parts(size)))

    def indices(self, size: int, degree: int, rank: int) -> list[int]:
        """The positions along `axis` rank `rank` holds, in order."""
        out: list[int] = []
        start = 0
        for i, p in enumerate(self._parts(size)):
            pieces = degree // self._replicas(i)
            n = p // pieces
            piece = rank // self._replicas(i)
            out.extend(range(start + piece * n, start + (piece + 1) * n))
            start += p
        return out

    def check(self, size: int, degree: int, what: str) -> None:
        """CannotShard unless every part cuts evenly into the pieces `degree` asks for."""
        for i, p in enumerate(self._parts(size)):
            r = self._replicas(i)
            if degree % r or p % (degree // r):
                raise CannotShard(f"{what}: {p} rows do not split into {degree // r} equal pieces")


@dataclass(frozen=True)
class Reduction:
    """A collective inside a sharded op: an all-reduce of `elements` values per token (Mamba's
    x_proj output, the partial sums of squares of a norm spanning the sharded channels)."""

    what: str
    elements: int


@dataclass(frozen=True)
class Sharding:
    """An op split `degree` ways: by `units` units of kind `unit`, contiguous ranges per rank."""

    unit: str
    units: int
    degree: int
    #: declared weight (name in the module) -> how it is cut; a weight not named is replicated
    weights: Mapping[str, Split] = field(default_factory=dict)
    #: declared weight -> the unit that owns it whole (an expert's weights under expert parallelism)
    owned: Mapping[str, int] = field(default_factory=dict)
    #: declared state tensor -> how it is cut (the batch dimension is not part of a state's shape)
    state: Mapping[str, Split] = field(default_factory=dict)
    output: Output = "sum"
    reductions: tuple[Reduction, ...] = ()
    #: replicated weights applied after the output's reduction (a row-parallel projection's bias):
    #: added once, not once per rank
    after_reduce: tuple[str, ...] = ()

    def ranks_of_unit(self, unit: int) -> int:
        """The rank holding `unit` (contiguous ranges)."""
        return unit * self.degree // self.units

    def local_shape(self, name: str, shape: tuple[int, ...], rank: int = 0) -> tuple[int, ...]:
        """The shape rank `rank` holds of the declared weight `name` ((0,…) for another rank's expert)."""
        if name in self.owned:
            return shape if self.ranks_of_unit(self.owned[name]) == rank else tuple(0 for _ in shape)
        split = self.weights.get(name)
        if split is None:
            return shape
        return tuple(split.local_size(s, self.degree) if a == split.axis else s for a, s in enumerate(shape))

    def local_numel(self, name: str, shape: tuple[int, ...]) -> float:
        """Elements of `name` per rank, averaged over ranks (owned weights: 1/degree each)."""
        if name in self.owned:
            return math.prod(shape) / self.degree
        return math.prod(self.local_shape(name, shape))


def split_units(unit: str, units: int, degree: int, what: str) -> None:
    """CannotShard unless `units` of kind `unit` split evenly `degree` ways."""
    if units % degree:
        raise CannotShard(f"{units} {unit} of {what} do not split {degree} ways")


@dataclass(frozen=True)
class Parallel:
    """An op's parallelism rule: its tensor- and expert-parallel shardings (None: replicated), its
    context-parallel form, and why it lacks one where it does."""

    tensor: Callable[[int], Sharding] | None = None
    expert: Callable[[int], Sharding] | None = None
    context: Context = "none"
    #: why the op has no tensor-parallel split (shown by `archc plan` and docs/distributed.md)
    why_replicated: str = ""
    #: why the op cannot run on a split sequence, when `context` is `none`
    why_context: str = ""


#: The rule of ops without one. On a split sequence they run as they are if they mix no positions
#: (`archc.passes.facts.node_parallel` reads the op's causality rule), else they cannot.
REPLICATED = Parallel(why_replicated="no sharding rule: every rank holds the whole op")


def by_cuts(weights: Iterable[Weight], unit: str) -> dict[str, Split]:
    """Splits read from the declared weights' prune cuts: a weight cut along `axis` by `unit` is
    split along it. Right where each unit's slice is one contiguous block of that axis, in unit
    order (retention's head rows, RWKV's channels); a packed axis (Mamba's [x | z]) needs its
    parts written out. tests/ops/test_sharding.py checks every rule against the prune slices."""
    out: dict[str, Split] = {}
    for w in weights:
        axes = [axis for kind, axis in w.cuts if kind == unit]
        if len(axes) == 1:
            out[w.name] = Split(axes[0])
    return out
