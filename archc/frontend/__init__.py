"""The front end as one call: a spec file -> a checked `Graph` (parse, then lower).

`load` is what `archc check`, `archc summary`, `archc graph` and `archc.build` all start from. It
keeps the text of every file it read so diagnostics can show the offending source line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from archc.errors import ArchError, Diagnostic
from archc.frontend.lower import Limits, ast_to_graph
from archc.ir.graph import Graph


@dataclass
class Program:
    graph: Graph
    warnings: list[Diagnostic] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)


def load(path: str | Path, limits: Limits | None = None, sources: dict[str, str] | None = None) -> Program:
    """Parse and lower a spec file. Raises `ArchError` (with `sources` filled in) on errors."""
    sources = {} if sources is None else sources
    text = read_spec(path)
    sources[str(path)] = text
    return loads(text, str(path), limits, sources)


def read_spec(path: str | Path) -> str:
    """The text of a spec file: at most `MAX_FILE_BYTES` are read (`/dev/zero` is refused, not
    read forever), decoded as UTF-8; every failure is an ARC0001/ARC0105 diagnostic."""
    from archc.dsl.parser import MAX_FILE_BYTES

    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ArchError([Diagnostic("ARC0105", f"{p} is larger than {MAX_FILE_BYTES:,} bytes", None,
                                        "split it with `include`, or use `repeat` instead of writing layers out")])
        return data.decode("utf-8")
    except FileNotFoundError as e:
        raise ArchError([Diagnostic("ARC0001", f"no such file: {p}", None, "check the path")]) from e
    except IsADirectoryError as e:
        raise ArchError([Diagnostic("ARC0001", f"{p} is a directory, not a spec file", None,
                                    "give the path of a .arch file")]) from e
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1
        raise ArchError([Diagnostic("ARC0001", f"{p} is not UTF-8 text (byte {e.start:,}, line {line}: {e.reason})",
                                    None, "save the spec as UTF-8")]) from e
    except OSError as e:
        raise ArchError([Diagnostic("ARC0001", f"cannot read {p}: {e.strerror}", None,
                                    "check the path and its permissions")]) from e


def loads(text: str, path: str = "<string>", limits: Limits | None = None,
          sources: dict[str, str] | None = None) -> Program:
    """Parse and lower spec text (includes resolve relative to `path`)."""
    from archc.dsl.parser import parse

    sources = {} if sources is None else sources
    sources[path] = text
    module = parse(text, path)
    graph, warnings = ast_to_graph(module, limits, sources)
    return Program(graph, warnings, sources)
