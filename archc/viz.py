"""The IR as a picture: DOT text with one cluster per block instance (`archc graph`).

DOT is built with the `graphviz` package; SVG/PNG/PDF need Graphviz's `dot` program.
"""

from __future__ import annotations

import re
import shutil

from archc.ir.graph import Graph

_LAYER = re.compile(r"^(.*?\.\d+)\.")


class RenderError(Exception):
    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def _label(n) -> str:
    shape = ", ".join(str(d) for d in n.type.shape)
    return f"{n.id.rsplit('.', 1)[-1]}\\n{n.op} [{shape}]"


def graph_to_dot(graph: Graph) -> str:
    import graphviz

    dot = graphviz.Digraph(graph.name, graph_attr={"rankdir": "TB", "fontname": "Helvetica"},
                           node_attr={"shape": "box", "style": "rounded,filled", "fillcolor": "white",
                                      "fontname": "Helvetica", "fontsize": "10"})
    clusters: dict[str, list] = {}
    for n in graph.nodes.values():
        m = _LAYER.match(n.id)
        clusters.setdefault(m.group(1) if m else "", []).append(n)
    for key, nodes in clusters.items():
        target = dot
        if key:
            sub = graphviz.Digraph(f"cluster_{key}")
            blocks = nodes[0].blocks
            sub.attr(label=f"{key}" + (f" ({blocks[-1]})" if blocks else ""), style="rounded", color="gray60")
            target = sub
        for n in nodes:
            color = "lightblue" if n.op == "input" else ("gray92" if n.op in ("add", "mul") else "white")
            target.node(n.id, _label(n), fillcolor=color)
        if key:
            dot.subgraph(target)
    for n in graph.nodes.values():
        for i in n.inputs:
            dot.edge(i, n.id)
    for o in graph.outputs:
        dot.node(f"__out_{o}", "output", shape="oval", fillcolor="lightyellow")
        dot.edge(o, f"__out_{o}")
    return dot.source


def render_dot(source: str, fmt: str) -> bytes:
    import subprocess

    exe = shutil.which("dot")
    if exe is None:
        raise RenderError(f"rendering {fmt.upper()} needs Graphviz's `dot` program, which is not installed",
                          "install Graphviz (Debian/Ubuntu: `apt install graphviz`, macOS: `brew install "
                          "graphviz`), or write DOT text with `-o graph.dot`")
    proc = subprocess.run([exe, f"-T{fmt}"], input=source.encode(), capture_output=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RenderError(f"Graphviz failed: {proc.stderr.decode(errors='replace').strip()}",
                          "write DOT with `-o graph.dot` and inspect it")
    return proc.stdout
