"""The op registry: everything the compiler knows about an op, in one record.

An `OpDef` carries the op's parameter schema (pydantic), its shape rule and its cost rule, which
is all the front end and `archc summary` need; backends attach their rules to the same record
(DESIGN.md §3). Family files under `archc/ops/` call `register` at import time, and
`archc/ops/__init__.py` imports them all, so passes and backends only ever look ops up by name.
"""

from __future__ import annotations

import importlib
import sys
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from archc.ir.cost import Cost, CostCtx, StateTensor
from archc.ir.sharding import REPLICATED, Context, Parallel
from archc.ir.types import TensorType
from archc.ir.weights import Weight

if TYPE_CHECKING:
    pass

#: What an op does in a model: the one classification of an op. Backends and passes read this
#: instead of guessing from names: the initializer counts `mixer`s for GPT-2's residual scaling,
#: the loss comes from the `head`, and the op's `kind` follows from it. (`position` is a position
#: scheme passed to attention as `pos=`; a learned or sinusoidal table added to x is an
#: `embedding`.) Where an op is listed (docs/ops.md, `archc ops`) it is grouped by its family
#: file, not by another classifier.
Role = Literal["input", "embedding", "position", "mixer", "ffn", "norm", "head", "wrapper", "arith",
               "activation", "misc"]

#: How the compiler treats a node, from its role: a `layer` is a module with a lowering; a
#: `component` exists only as another op's parameter (`pos=rope(...)`); `arith` is computed inline
#: by every backend (`a + b`); `input` is a graph input.
Kind = Literal["layer", "component", "arith", "input"]
_KIND_OF_ROLE: dict[str, Kind] = {"position": "component", "arith": "arith", "input": "input"}

#: The training objective a head implies (`lm`: next-token prediction when the model is causal,
#: masked-LM style — unshifted labels — when it is bidirectional).
Loss = Literal["lm", "classification", "regression", "token_classification", "crf", "ctc"]

#: The classes `--quantize` quantizes unless told otherwise; every other class stays in fp32.
QUANTIZED_BY_DEFAULT: frozenset[str] = frozenset({"projection", "ffn", "expert", "embedding", "head"})

#: Why a class stays in fp32 by default (shown by `archc export --explain` and docs/compression.md).
KEPT_BECAUSE: dict[str, str] = {
    "router": "a top-k routing decision flips on small errors",
    "norm": "elementwise scales; no quantized kernel takes them",
    "ssm": "A/B/C/D set the recurrence's poles; errors compound over time (state-spaces/mamba#133)",
    "discretization": "Δ enters exp(Δ·A): a relative error in Δ is an error in every decay",
    "decay": "decays compound over the sequence (int8 RWKV gave NaN logits, transformers#23848)",
    "gate": "exponential gates amplify input errors",
    "conv": "a 4-tap depthwise filter, kept in fp32 by llama.cpp and TensorRT-LLM (ggml-org/llama.cpp#9387)",
    "recurrent": "applied to the state at every step: errors compound",
    "position": "added to every token",
    "mix": "elementwise interpolation weights; nothing to gain",
    "memory": "carried across segments",
    "features": "a fixed random draw that the estimate of softmax attention is unbiased for",
}

class Params(BaseModel):
    """Base of every op's parameter schema: frozen, unknown keys rejected. Values derived from
    the parameters and the input width (a head's width, Δ's rank) are methods of the schema, so
    the cost rule, the declared state and every backend compute them in one place."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False,
                              # schemas are built on first validation: a spec uses a few ops
                              defer_build=True)


class Expands:
    """Mixin of schemas with an `expand` factor (Mamba, Mamba-2, mLSTM): the inner width. (The
    schema declares the field; a mixin's annotation would not be a pydantic field.)"""

    if TYPE_CHECKING:
        expand: int

    def inner(self, d: int) -> int:
        """E = expand·d, or the schema's explicit `inner_width` (a pruned model's)."""
        return getattr(self, "inner_width", None) or self.expand * d


class Heads:
    """Mixin of schemas that split a width into `heads` equal heads."""

    if TYPE_CHECKING:
        heads: int

    def head_dim_for(self, d: int) -> int:
        """The width of one head, d/heads (the shape rule checks that heads divide d)."""
        return d // self.heads


class ShapeError(Exception):
    """Raised by a shape rule; lowering turns it into a diagnostic at the call (or `arg`)."""

    def __init__(self, message: str, hint: str | None = None, arg: str | None = None, code: str = "ARC0301"):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.arg = arg
        self.code = code
        #: The node being typed, when a pass raised it.
        self.node: str | None = None


@dataclass(frozen=True)
class PruneAxis:
    """One kind of unit an op can lose — its prune rule (DESIGN.md §3), in index arithmetic only:
    the torch backend masks, slices and scores units from it, the spec rewrite takes `params`.

    Units are numbered 0..units−1 and fall into `groups` equal groups (GQA's kv groups, a MoE's
    experts for their hidden units) that must keep equal counts. A unit is the slices
    `slices(u)` = {parameter: (axis, indices)} of the op's weights — or a list of such pairs
    for a parameter cut along two axes (mLSTM's gates: a head's row and its input columns);
    `unit_slices` reads either — (zeroed, they make the unit
    contribute nothing: `archc prune`'s masked model) and the submodules `modules(u)` it owns
    whole (an expert). `activation(u)` = (submodule, channels of its input) carries the unit's
    activation, for activation and Taylor importance; `params(kept)` are the op's new parameters
    once `kept` units remain; `scale(kept)` multiplies parameters after slicing (a norm over the
    pruned width)."""

    kind: str  # "heads", "ffn", "inner", "experts"
    units: int
    slices: Callable[[int], dict[str, tuple[int, list[int]] | list[tuple[int, list[int]]]]]
    #: the kept units (sorted indices) -> the op's new parameters
    params: Callable[[list[int]], dict[str, Any]]
    activation: Callable[[int], tuple[str, list[int] | None]]
    groups: int = 1
    #: the new parameters name the kept units themselves (RetNet's decays): every node of one call
    #: site must keep the same units, chosen by their summed importance
    same_units: bool = False
    modules: Callable[[int], list[str]] = lambda u: []
    scale: Callable[[int], dict[str, float]] = lambda kept: {}
    #: how the masked model relates to the pruned one, when not exactly equal
    note: str = ""


def unit_slices(axis: PruneAxis, unit: int) -> list[tuple[str, int, list[int]]]:
    """(parameter, axis, indices) of every slice of `unit`, a parameter cut along two axes twice."""
    out = []
    for name, cut in axis.slices(unit).items():
        for ax, idx in (cut if isinstance(cut, list) else [cut]):
            out.append((name, ax, idx))
    return out


class CannotPrune(Exception):
    """Raised by a prune rule for unit kinds the op has but cannot lose as configured (ALiBi's
    slopes depend on the head count); `archc prune` reports it at the op's line when one of
    `kinds` is asked for."""

    def __init__(self, message: str, kinds: tuple[str, ...]) -> None:
        super().__init__(message)
        self.kinds = kinds


ShapeRule = Callable[[Any, list[TensorType]], TensorType]
CostRule = Callable[..., Cost]
#: True: only the past reaches a position; False: the future does too; None: positions do not mix.
CausalRule = Callable[[Any, list[TensorType]], bool | None]
StateRule = Callable[[Any, list[TensorType]], tuple[StateTensor, ...]]
WeightsRule = Callable[[Any, list[TensorType]], tuple[Weight, ...]]
#: The state of a higher-order op built from its body's state (renamed, repeated, rebound).
BodyStateRule = Callable[[Any, tuple[StateTensor, ...]], tuple[StateTensor, ...]]


def pointwise(p: Any, ins: list[TensorType]) -> bool | None:
    """The causality rule of ops that never mix positions."""
    return None


def mixes_causally(p: Any, ins: list[TensorType]) -> bool | None:
    return True


def mixes_both_ways(p: Any, ins: list[TensorType]) -> bool | None:
    return False


def unless_bidirectional(p: Any, ins: list[TensorType]) -> bool | None:
    """Causal unless the op's `bidirectional` parameter is set (S4, LSTM, GRU)."""
    return not p.bidirectional


def no_state(p: Any, ins: list[TensorType]) -> tuple[StateTensor, ...]:
    return ()


def no_weights(p: Any, ins: list[TensorType]) -> tuple[Weight, ...]:
    return ()


def no_prune(p: Any, ins: list[TensorType]) -> tuple[PruneAxis, ...]:
    return ()


def replicated(p: Any, ins: list[TensorType]) -> Parallel:
    """The parallelism rule of ops without one: whole on every rank (`archc plan` lists them)."""
    return REPLICATED


def replicated_because(why: str, context: Context = "none", why_context: str = "") -> Callable[..., Parallel]:
    """The parallelism rule of an op kept whole on every rank for a stated reason."""
    rule = Parallel(why_replicated=why, context=context, why_context=why_context)
    return lambda p, ins: rule


def no_loss(p: Any) -> Loss | None:
    return None


def no_ties(p: Any) -> dict[str, tuple[str, str]]:
    return {}


@dataclass(frozen=True, kw_only=True)
class OpDef:
    """Everything the compiler knows about one op (DESIGN.md §3). Backends attach their
    implementations in their own lowering tables, keyed by the op's name."""

    name: str
    params: type[Params]
    shape: ShapeRule
    cost: CostRule
    summary: str
    #: Required tensor inputs, by the names a caller may also pass them by keyword.
    inputs: tuple[str, ...] = ("x",)
    #: Optional tensor inputs (e.g. `kv` of cross-attention).
    optional_inputs: tuple[str, ...] = ()
    #: Parameters that take an op spec (e.g. `pos=rope(...)`), mapped to the ops they take.
    components: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: A higher-order op wraps the block passed as `block=`.
    takes_block: bool = False
    #: Module name used for the node id (`attn` -> `layers.3.attn`).
    default_name: str = ""
    #: Which input positions must be token ids rather than hidden states.
    int_inputs: tuple[int, ...] = ()
    #: What the op does in a model (see `Role`).
    role: Role = "misc"
    #: Whether the op mixes positions, and only causally (see `CausalRule`). A higher-order op's
    #: body is checked as well, so its own rule covers only what it adds (MoD's routing).
    causal: CausalRule = pointwise
    #: The declared inference state, per sequence (empty: stateless).
    state: StateRule = no_state
    #: Higher-order ops: their state as a function of the body's (default: the body's, prefixed `body.`).
    body_state: BodyStateRule | None = None
    #: The declared weights (`archc.ir.weights.Weight`): what the op's module holds, by name in
    #: the module, with shape, precision class, init role and prune cuts. The module allocates
    #: its parameters from them; the cost model counts them (DESIGN.md §3).
    weights: WeightsRule = no_weights
    #: Heads: the loss the head implies.
    loss: Callable[[Any], Loss | None] = no_loss
    #: Weight tying: {own parameter: (op, its parameter)}, resolved by lowering to the nearest
    #: preceding node of that op (a tied lm_head shares the embedding's `weight`).
    ties: Callable[[Any], dict[str, tuple[str, str]]] = no_ties
    #: A fused op: the ops a fusion pass replaces with it (it computes exactly what they do; specs
    #: do not need to name it, the pass makes it). docs/passes.md.
    fuses: tuple[str, ...] = ()
    #: A node with several outputs: their names (its shape rule gives a `TupleType` of as many
    #: tensors; `item` nodes read them, named `<node id>.<output>`).
    outputs: tuple[str, ...] = ()
    #: The prune rule: the kinds of unit the op can lose (`PruneAxis`), from its parameters and
    #: input types; an op without any cannot be pruned structurally.
    prune: Callable[[Any, list[TensorType]], tuple[PruneAxis, ...]] = no_prune
    #: The parallelism rule (`archc.ir.sharding.Parallel`): how the op's declared weights and state
    #: split under tensor and expert parallelism, and how it runs on a split sequence; without one
    #: the op is replicated (and, if it mixes no positions, split by sequence freely).
    parallel: Callable[[Any, list[TensorType]], Parallel] = replicated
    #: Parameters for the docs' weight table (`archc ops`, docs/ops.md, on width 64) where the op
    #: has required ones: the record carries its own example, so adding an op touches no docs code.
    example: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.default_name:
            object.__setattr__(self, "default_name", self.name)

    @property
    def kind(self) -> Kind:
        return _KIND_OF_ROLE.get(self.role, "layer")



def _source_digest(path: Path) -> int:
    """Content checksum of a family file: the catalog is trusted only for files it has seen."""
    return zlib.crc32(path.read_bytes())


class Registry(Mapping[str, OpDef]):
    """Op name -> record, importing family files on first use.

    A spec names a handful of ops; importing all twenty-odd family files (and defining their
    schemas) is a tenth of `archc check`'s time. `archc/ops/_catalog.py`, generated by
    `python -m archc.docs_gen`, maps each family file (with its checksum) to the ops it registers,
    so a lookup imports one file. A family file the catalog does not know, or whose contents
    changed since, is imported up front: a stale catalog costs speed, never a missing op.
    Iterating (`archc ops`, docs, "did you mean") imports every family.
    """

    def __init__(self) -> None:
        self._ops: dict[str, OpDef] = {}
        #: op -> the family file that registered it
        self.family: dict[str, str] = {}
        self._family_of: dict[str, str] | None = None  # op -> family module not yet imported

    def register(self, op: OpDef, family: str) -> OpDef:
        assert op.name not in self._ops, f"op {op.name} registered twice"
        self._ops[op.name] = op
        self.family[op.name] = family
        return op

    def _where(self) -> dict[str, str]:
        if self._family_of is None:
            self._family_of = {}
            try:
                from archc.ops._catalog import FAMILIES
            except ImportError:  # a checkout whose catalog was never generated
                FAMILIES = {}
            stale = []
            for family, path in family_files().items():
                known = FAMILIES.get(family)
                if known is not None and known[0] == _source_digest(path):
                    self._family_of.update(dict.fromkeys(known[1], family))
                else:
                    stale.append(family)
            for family in stale:
                importlib.import_module(f"archc.ops.{family}")
        return self._family_of

    def _load(self, name: str) -> None:
        family = self._where().pop(name, None)
        if family is not None:
            importlib.import_module(f"archc.ops.{family}")

    def load_all(self) -> None:
        for family in family_files():
            importlib.import_module(f"archc.ops.{family}")
        self._where().clear()

    def __getitem__(self, name: str) -> OpDef:
        if name not in self._ops:
            self._load(name)
        return self._ops[name]

    def __contains__(self, name: object) -> bool:
        return name in self._ops or name in self._where()

    def __iter__(self) -> Iterator[str]:
        self.load_all()
        return iter(sorted(self._ops))

    def __len__(self) -> int:
        self.load_all()
        return len(self._ops)


def family_files() -> dict[str, Path]:
    """The family files of `archc/ops/`, by module name: every module but the registry itself
    and private ones (`_catalog`). Adding a family is adding a file."""
    here = Path(__file__).parent
    return {p.stem: p for p in sorted(here.glob("*.py"))
            if p.stem not in ("__init__", "registry") and not p.stem.startswith("_")}


def catalog_source() -> str:
    """The text of `archc/ops/_catalog.py` for the family files as they are now."""
    REGISTRY.load_all()
    by_family: dict[str, list[str]] = {}
    for name in REGISTRY:
        by_family.setdefault(REGISTRY.family[name], []).append(name)
    lines = ['"""Which ops each family file registers, with a checksum of the file; generated by',
             '`python -m archc.docs_gen` (see `Registry`). Do not edit."""', "", "FAMILIES = {"]
    for family, path in family_files().items():
        names = tuple(sorted(by_family.get(family, [])))
        lines.append(f'    "{family}": ({_source_digest(path)}, {names!r}),')
    lines.append("}")
    return "\n".join(lines) + "\n"


REGISTRY = Registry()


def register(op: OpDef) -> OpDef:
    """Called by family files at import time; the calling module is the op's family."""
    module = sys._getframe(1).f_globals["__name__"]
    return REGISTRY.register(op, module.rsplit(".", 1)[-1])


def no_cost(p: Any, ins: list[TensorType], out: TensorType, ctx: CostCtx) -> Cost:
    """Ops that hold no weights and do no matmul work (elementwise, positions without tables)."""
    return Cost()


def same_shape(p: Any, ins: list[TensorType]) -> TensorType:
    return ins[0]


def hidden_to_hidden(p: Any, ins: list[TensorType]) -> TensorType:
    """The shape rule of ops that map hidden states [B, T, d] to hidden states of the same shape
    and check nothing else (FFNs, position tables added to x, wrappers)."""
    width_of(ins)
    return ins[0]


def linear(d_in: int, d_out: int, bias: bool) -> tuple[int, int]:
    """(parameters, forward FLOPs per token) of a dense layer: 2·d_in·d_out multiply-adds."""
    return d_in * d_out + (d_out if bias else 0), 2 * d_in * d_out


def width_of(ins: list[TensorType], i: int = 0, what: str = "input") -> int:
    """The feature width of hidden-state input `i`, or a shape error if it is not [B, T, d]."""
    t = ins[i]
    if t.dtype != "float" or len(t.shape) != 3:
        raise ShapeError(
            f"{what} must be hidden states float[batch, seq, d], got {t}",
            "token ids go through `embed(tokens, vocab, d)` first" if t.dtype == "int" else None,
            code="ARC0302",
        )
    return t.width


def seq_len(t: TensorType, ctx: CostCtx) -> int:
    from archc.ir.types import resolve

    return resolve(t.shape[1], ctx.env)


def divides(a: int, b: int, what_a: str, what_b: str, arg: str | None = None, hint: str | None = None) -> None:
    """Shape error unless a divides b (e.g. heads must divide the width)."""
    if a <= 0 or b % a != 0:
        raise ShapeError(f"{what_a} ({a}) does not divide {what_b} ({b})", hint, arg=arg, code="ARC0303")


def rows(start: int, width: int) -> list[int]:
    """Indices start·width … (start+1)·width − 1: one head's rows of a projection."""
    return list(range(start * width, (start + 1) * width))
