"""The stage order of the package, checked on the source: no module imports a later stage, and
no two modules import each other, not even lazily inside a function (DESIGN.md §1: every stage is
a function from one value to the next; none reaches back)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent / "archc"

#: The stages in order; a module may import its own stage and earlier ones. `errors` is shared by
#: all. The front end (parse + lower) sits above the passes because lowering types each node with
#: the shape pass's rule; in the pipeline it runs first.
STAGES = [
    ("archc.errors", "archc.version", "archc.files"),
    ("archc.data",),
    ("archc.dsl", "archc.ir"),
    ("archc.ops",),
    ("archc.passes",),
    ("archc.parallel",),
    ("archc.frontend",),
    ("archc.cost_table", "archc.viz", "archc.explain", "archc.docs_gen"),
    ("archc.backends",),
    ("archc.hf",),
    ("archc.bench",),
    ("archc.cli",),
    ("archc", "archc.__main__"),
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _stage(module: str) -> int:
    best = None
    for rank, prefixes in enumerate(STAGES):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (rank, len(p))
    assert best is not None, f"{module} belongs to no stage; add it to STAGES"
    return best[0]


def _imports() -> dict[str, set[str]]:
    """Every archc module imported by each archc module, function-level imports included
    (`TYPE_CHECKING` blocks excluded: they never run)."""
    out: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        name = _module_name(path)
        tree = ast.parse(path.read_text(), str(path))
        type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                     and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                     for n in ast.walk(node)}
        deps: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("archc"))
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("archc") and not node.level:
                for a in node.names:  # `from archc.ops import registry` imports the submodule
                    sub = f"{node.module}.{a.name}"
                    deps.add(sub if (ROOT.parent / sub.replace(".", "/")).with_suffix(".py").exists()
                             or (ROOT.parent / sub.replace(".", "/")).is_dir() else node.module)
        out[name] = deps - {name}
    return out


def test_no_stage_imports_a_later_one():
    bad = [f"{m} (stage {_stage(m)}) imports {d} (stage {_stage(d)})"
           for m, deps in _imports().items() for d in deps if _stage(d) > _stage(m)]
    assert bad == []


def test_no_import_cycles():
    g = nx.DiGraph((m, d) for m, deps in _imports().items() for d in deps
                   if d != "archc" and not m.startswith(d + "."))  # a package's own __init__ is not a cycle
    cycles = list(nx.simple_cycles(g))
    assert cycles == []
