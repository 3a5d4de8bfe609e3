"""The pass manager: named passes over the IR, named pipelines of them, a verifier between passes.

A pass is a pure function `Graph, options -> Graph` with a name (its file stem under
`archc/passes/`): it returns a new graph and leaves its input untouched (`Graph.copy()` first,
then edit). Each pass owns its options: `@register_pass(name, summary, options=CostCtx)` names
the type, and `run(..., options={"estimate_cost": CostCtx(seq=4096)})` gives a value per pass (a
pass without one gets `options()`, its default). Analyses write their results into `node.meta`
(torch.fx's convention), so an analysis is a pass like any other and its result travels with the
graph.

`run(graph, "summary")` runs a pipeline; with `verify_each` (the default) the verifier checks the
graph after every pass, so a pass that breaks an invariant is named at once, with the node it
broke. Dumps after any pass (`archc passes SPEC --dump-after NAME`) print the canonical IR text.

Passes register themselves with `@register_pass`; `passes()` imports every file of this package
by name (as `archc/ops/` does), so adding a pass is adding a file.
"""

from __future__ import annotations

import importlib
import pkgutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from archc.errors import Span
from archc.ir.graph import Graph, GraphError


class NoOptions:
    """The options of a pass that takes none."""


PassFn = Callable[[Graph, Any], Graph]


@dataclass(frozen=True)
class Pass:
    name: str
    fn: PassFn
    #: One line for `archc passes --list`.
    summary: str
    #: The type of the pass's options; `options()` is its default value.
    options: Callable[[], Any] = NoOptions

    def __call__(self, graph: Graph, options: Any = None) -> Graph:
        return self.fn(graph, self.options() if options is None else options)


class PassError(Exception):
    """A pass failed, or left a graph the verifier rejects: names the pass and the node."""

    def __init__(self, pass_name: str, message: str, node: str | None = None, span: Span | None = None,
                 code: str = "ARC1001", hint: str | None = None, before: tuple[str, ...] = ()) -> None:
        where = f" at node `{node}`" if node else ""
        super().__init__(f"pass `{pass_name}`{where}: {message}")
        self.pass_name, self.message, self.node, self.span = pass_name, message, node, span
        self.code, self.hint, self.before = code, hint, before


_PASSES: dict[str, Pass] = {}
_loaded = False


def register_pass(name: str, summary: str, options: Callable[[], Any] = NoOptions) -> Callable[[PassFn], Pass]:
    def deco(fn: PassFn) -> Pass:
        assert name not in _PASSES, f"pass {name} registered twice"
        _PASSES[name] = p = Pass(name, fn, summary, options)
        return p

    return deco


def passes() -> dict[str, Pass]:
    """Every registered pass by name (imports the pass files on first use)."""
    global _loaded
    if not _loaded:
        for mod in pkgutil.iter_modules(_package_path()):
            if mod.name not in ("manager", "verify", "facts", "rewrite"):
                importlib.import_module(f"archc.passes.{mod.name}")
        _loaded = True
    return _PASSES


def _package_path() -> list[str]:
    import archc.passes

    return list(archc.passes.__path__)


#: Named pipelines. `check` is what lowering ends with; `summary` adds the cost annotations;
#: `clean` also removes values nothing reads (which changes the parameter count of a spec that has
#: such values, so it is not part of building a module as written). `O0`, `O1`, `O2` are the
#: optimization levels `archc.build` and `archc export` run (docs/passes.md): `O0` the graph as
#: lowered; `O1` the fusions that pay in eager PyTorch; `O2` those and the ones for exported graphs.
#: Every fused op computes what it replaces, and checkpoints keep the canonical layout, so a
#: checkpoint of any level loads into a build of any other.
PIPELINES: dict[str, tuple[str, ...]] = {
    "check": ("infer_shapes",),
    "summary": ("infer_shapes", "estimate_cost"),
    "clean": ("infer_shapes", "eliminate_dead_code", "estimate_cost"),
    "O0": (),
    "O1": ("pack_qkv", "pack_gate_up", "pack_in_proj", "fuse_add_norm"),
    "O2": ("pack_qkv", "pack_gate_up", "pack_in_proj", "fuse_add_norm", "fuse_bias_act"),
}

#: The optimization levels (`archc.build(..., pipeline=)` takes one of them).
LEVELS = ("O0", "O1", "O2")
#: What `archc.build`, `archc build`, `train` and `generate` run unless told otherwise.
BUILD_LEVEL = "O1"
#: What `archc export` runs unless told otherwise.
EXPORT_LEVEL = "O2"


@dataclass
class PassRecord:
    name: str
    seconds: float
    nodes_before: int
    nodes_after: int


@dataclass
class PipelineResult:
    graph: Graph
    records: list[PassRecord] = field(default_factory=list)
    #: IR text after each pass that was asked for, by pass name (`--dump-after`).
    dumps: dict[str, str] = field(default_factory=dict)


def resolve(pipeline: str | Iterable[str]) -> list[Pass]:
    """Pass objects for a pipeline name or a list of pass names (unknown names: a ValueError
    listing the known ones, as mamba_ssm's `create_block` does)."""
    known = passes()
    names = PIPELINES.get(pipeline) if isinstance(pipeline, str) else tuple(pipeline)
    if names is None:
        raise ValueError(f"unknown pipeline `{pipeline}`; pipelines: {', '.join(PIPELINES)}")
    out = []
    for n in names:
        if n not in known:
            raise ValueError(f"unknown pass `{n}`; passes: {', '.join(sorted(known))}")
        out.append(known[n])
    return out


def run(graph: Graph, pipeline: str | Iterable[str], options: Mapping[str, Any] | None = None, *,
        verify_each: bool = True, dump_after: Iterable[str] = ()) -> PipelineResult:
    """Run the passes of `pipeline` in order, each with its value in `options` (by pass name) or
    its default. Raises `PassError` naming the failing pass (and the passes before it) and the
    node; `dump_after` names passes (or `all`) whose output is kept as text in the result."""
    from archc.ops.registry import ShapeError
    from archc.passes.verify import VerifyError, verify

    options = dict(options or {})
    plan = resolve(pipeline)
    foreign = set(options) - {p.name for p in plan}
    if foreign:
        raise ValueError(f"options for {', '.join(sorted(foreign))}, which the pipeline does not run")
    wanted = set(dump_after)
    unknown = wanted - {p.name for p in plan} - {"all"}
    if unknown:
        raise ValueError(f"--dump-after {', '.join(sorted(unknown))}: not in the pipeline "
                         f"({', '.join(p.name for p in plan)})")
    result = PipelineResult(graph)
    done: list[str] = []
    for p in plan:
        before = len(result.graph)
        t0 = time.perf_counter()
        try:
            g = p(result.graph, options.get(p.name))
        except ShapeError as e:
            node = getattr(e, "node", None)
            raise PassError(p.name, e.message, node, _span(result.graph, node), e.code, e.hint, tuple(done)) from e
        except GraphError as e:
            raise PassError(p.name, e.message, e.node, _span(result.graph, e.node), before=tuple(done)) from e
        if verify_each:
            try:
                verify(g)
            except VerifyError as e:
                raise PassError(p.name, f"the graph it returned fails verification: {e.message}", e.node,
                                e.span, "ARC1002", before=tuple(done)) from e
        result.records.append(PassRecord(p.name, time.perf_counter() - t0, before, len(g)))
        result.graph = g
        done.append(p.name)
        if p.name in wanted or "all" in wanted:
            result.dumps[p.name] = g.to_text(annotations=True)
    return result


def _span(graph: Graph, node: str | None) -> Span | None:
    if node is None:
        return None
    for n in graph.walk():
        if n.id == node:
            return n.span
    return None
