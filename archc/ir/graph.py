"""The typed graph IR: the contract between the front end, the passes and the backends.

A `Graph` is a dataflow graph in SSA form: every `Node` produces one tensor, names the nodes
whose outputs it consumes (`inputs`), and is stored in `nodes` in a topological order (the order
the lowering created it in). Node ids are readable paths (`layers.3.attn`) that become parameter
prefixes in the torch backend. Higher-order ops (mixture-of-depths, adaptive computation time,
recurrent memory) hold the block they wrap as a nested `Graph` in `body`, as JAX's `cond`/`scan`
hold sub-jaxprs.

networkx holds the topology for the passes that need graph algorithms (`Graph.nx`). It is built on
first use rather than kept in sync, because importing networkx alone costs ~0.2 s, half of the
time budget of `archc check` (see docs/architecture.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from archc.errors import Span
from archc.ir.types import TensorType

if TYPE_CHECKING:
    import networkx


class Node(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    id: str
    op: str
    inputs: tuple[str, ...] = ()
    params: dict[str, Any] = Field(default_factory=dict)
    type: TensorType
    span: Span | None = None
    #: Names of the blocks this node was created in, outermost first (e.g. ("decoder",)).
    blocks: tuple[str, ...] = ()
    #: The wrapped block of a higher-order op; its inputs are the op's tensor inputs.
    body: Graph | None = None
    #: Free-form analysis results (cost, plan, ...), as in torch.fx's `node.meta`.
    meta: dict[str, Any] = Field(default_factory=dict)


class Graph(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    nodes: dict[str, Node] = Field(default_factory=dict)
    inputs: list[str] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    #: Deployment sections by kind (`export`, `parallel`, `train`), validated settings.
    sections: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def add(self, node: Node) -> Node:
        assert node.id not in self.nodes, f"duplicate node id {node.id}"
        for i in node.inputs:
            assert i in self.nodes, f"{node.id} uses {i} before it is defined"
        self.nodes[node.id] = node
        return node

    def __getitem__(self, node_id: str) -> Node:
        return self.nodes[node_id]

    def __len__(self) -> int:
        return len(self.nodes)

    def walk(self):
        """Every node, nested bodies included, in topological order."""
        for n in self.nodes.values():
            yield n
            if n.body is not None:
                yield from n.body.walk()

    def users(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {k: [] for k in self.nodes}
        for n in self.nodes.values():
            for i in n.inputs:
                out[i].append(n.id)
        return out

    @property
    def nx(self) -> networkx.DiGraph:
        """The topology as a networkx DiGraph (node attribute `node` holds the `Node`)."""
        import networkx

        g = networkx.DiGraph()
        for n in self.nodes.values():
            g.add_node(n.id, node=n)
            for i in n.inputs:
                g.add_edge(i, n.id)
        return g

    def to_text(self, indent: str = "") -> str:
        """The canonical text form (torch.fx / jaxpr style), used by docs, tests and dumps."""
        ins = ", ".join(f"%{i}: {self.nodes[i].type}" for i in self.inputs)
        lines = [f"{indent}graph {self.name}({ins}) {{"]
        for n in self.nodes.values():
            if n.op == "input":
                continue
            args = ", ".join(f"%{i}" for i in n.inputs)
            params = ", ".join(f"{k}={_fmt_param(v)}" for k, v in n.params.items())
            sep = "; " if args and params else ""
            lines.append(f"{indent}  %{n.id} : {n.type} = {n.op}({args}{sep}{params})")
            if n.body is not None:
                lines.append(n.body.to_text(indent + "    "))
        lines.append(f"{indent}  return {', '.join('%' + o for o in self.outputs)}")
        lines.append(f"{indent}}}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def _fmt_param(v: Any) -> str:
    if isinstance(v, dict) and "op" in v:
        inner = ", ".join(f"{k}={_fmt_param(x)}" for k, x in v.get("params", {}).items())
        return f"{v['op']}({inner})"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    return str(v)


Node.model_rebuild()
