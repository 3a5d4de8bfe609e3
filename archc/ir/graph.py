"""The typed graph IR: the contract between the front end, the passes and the backends.

A `Graph` is a dataflow graph in SSA form: every `Node` produces one value, names the nodes
whose outputs it consumes (`inputs`), and is stored in `nodes` in a topological order (the order
the lowering created it in). Node ids are readable paths (`layers.3.attn`) that become parameter
prefixes in the torch backend. Higher-order ops (mixture-of-depths, adaptive computation time,
recurrent memory) hold the block they wrap as a nested `Graph` in `body`, as JAX's `cond`/`scan`
hold sub-jaxprs. A node with several outputs (a fused residual add + norm) produces one
`TupleType` value, read only by `item` nodes, as torch.fx's `getitem`.

networkx holds the topology for the passes that need graph algorithms (`Graph.nx`). It is built on
first use rather than kept in sync, because importing networkx alone costs ~0.2 s, half of the
time budget of `archc check` (see docs/architecture.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from archc.errors import Span
from archc.ir.types import ValueType

if TYPE_CHECKING:
    import networkx


class GraphError(ValueError):
    """An edit that would break the graph's invariants (SSA order, unique ids, no dangling reads)."""

    def __init__(self, message: str, node: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.node = node


class Node(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    id: str
    op: str
    inputs: tuple[str, ...] = ()
    params: dict[str, Any] = Field(default_factory=dict)
    type: ValueType
    span: Span | None = None
    #: Names of the blocks this node was created in, outermost first (e.g. ("decoder",)).
    blocks: tuple[str, ...] = ()
    #: The wrapped block of a higher-order op; its inputs are the op's tensor inputs.
    body: Graph | None = None
    #: Weights shared with another node, as {own parameter: "node.parameter"} (a tied lm_head's
    #: {"weight": "embed.weight"}); the op's tie rule says which parameters may be tied.
    ties: dict[str, str] = Field(default_factory=dict)
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

    # ---- edits: every one keeps the SSA order (a node after the nodes it reads) and a span ----

    def add(self, node: Node) -> Node:
        """Append `node`; its inputs must already be defined."""
        return self.insert(node)

    def insert(self, node: Node, *, before: str | None = None, after: str | None = None) -> Node:
        """Insert `node` at the end, or just before / after an existing node. Its inputs must be
        defined earlier; a node without a span takes the span of the node it is placed beside."""
        if node.id in self.nodes:
            raise GraphError(f"node id `{node.id}` is already defined", node.id)
        if before is not None and after is not None:
            raise GraphError("insert takes `before` or `after`, not both", node.id)
        order = list(self.nodes)
        anchor = before if before is not None else after
        if anchor is None:
            at = len(order)
        elif anchor not in self.nodes:
            raise GraphError(f"no node `{anchor}` to insert `{node.id}` beside", node.id)
        else:
            at = order.index(anchor) + (1 if after is not None else 0)
        defined = set(order[:at])
        for i in node.inputs:
            if i not in defined:
                raise GraphError(f"`{node.id}` reads `{i}`, which is not defined before it", node.id)
        if node.span is None and anchor is not None:
            node = node.model_copy(update={"span": self.nodes[anchor].span})
        if at == len(order):
            self.nodes[node.id] = node
        else:
            items = list(self.nodes.items())
            items.insert(at, (node.id, node))
            self.nodes = dict(items)
        return node

    def replace(self, node_id: str, new: Node) -> Node:
        """Put `new` where `node_id` stands and point every use of `node_id` at `new`. `new` may keep
        the id or take another; without a span it takes the old node's."""
        if node_id not in self.nodes:
            raise GraphError(f"no node `{node_id}` to replace", node_id)
        if new.id != node_id and new.id in self.nodes:
            raise GraphError(f"node id `{new.id}` is already defined", new.id)
        order = list(self.nodes)
        defined = set(order[:order.index(node_id)])
        for i in new.inputs:
            if i not in defined:
                raise GraphError(f"`{new.id}` reads `{i}`, which is not defined before `{node_id}`", new.id)
        if new.span is None:
            new = new.model_copy(update={"span": self.nodes[node_id].span})
        self.nodes = {(new.id if k == node_id else k): (new if k == node_id else n) for k, n in self.nodes.items()}
        if new.id != node_id:
            self.replace_uses(node_id, new.id)
        return new

    def replace_uses(self, old: str, new: str) -> None:
        """Every input and output that reads `old` reads `new` instead (`new` must precede them)."""
        if new not in self.nodes:
            raise GraphError(f"no node `{new}` to read instead of `{old}`", new)
        order = {k: i for i, k in enumerate(self.nodes)}
        for n in list(self.nodes.values()):
            if old in n.inputs:
                if order[new] >= order[n.id]:
                    raise GraphError(f"`{n.id}` would read `{new}`, which is defined after it", n.id)
                self.nodes[n.id] = n.model_copy(update={"inputs": tuple(new if i == old else i for i in n.inputs)})
        self.outputs = [new if o == old else o for o in self.outputs]

    def erase(self, node_id: str) -> None:
        """Remove a node nothing reads (erase or rewire its users first)."""
        if node_id not in self.nodes:
            raise GraphError(f"no node `{node_id}` to erase", node_id)
        users = self.users_of(node_id)
        if users or node_id in self.outputs:
            what = ", ".join(f"`{u}`" for u in users) or "the graph's outputs"
            raise GraphError(f"`{node_id}` is still read by {what}", node_id)
        del self.nodes[node_id]
        if node_id in self.inputs:
            self.inputs.remove(node_id)

    def copy(self) -> Graph:
        """An independent copy: nodes, bodies and meta dicts are new objects (params are shared
        read-only values), so a pass can edit the copy and leave its input untouched."""
        nodes = {k: n.model_copy(update={"meta": dict(n.meta), "params": dict(n.params),
                                         "body": None if n.body is None else n.body.copy()})
                 for k, n in self.nodes.items()}
        return Graph(name=self.name, nodes=nodes, inputs=list(self.inputs), outputs=list(self.outputs),
                     sections={k: dict(v) for k, v in self.sections.items()})

    # ---- queries ----

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

    def users_of(self, node_id: str) -> list[str]:
        """The nodes that read `node_id`, in order."""
        return [n.id for n in self.nodes.values() if node_id in n.inputs]

    def input_types(self, node: Node) -> list[ValueType]:
        return [self.nodes[i].type for i in node.inputs]

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

    def to_text(self, indent: str = "", annotations: bool = False) -> str:
        """The canonical text form (torch.fx / jaxpr style), used by docs, tests and dumps:

            graph t(%tokens: int[batch, seq]) {
              %embed : float[batch, seq, 32] = embed(%tokens; vocab=256, d=32, ...)
              ...
              return %lm_head
            }

        Ties print as `ties={weight=embed.weight}`; with `annotations`, analyses that left a
        printable summary in `meta` (the cost pass's `cost`) follow each node as a comment."""
        ins = ", ".join(f"%{i}: {self.nodes[i].type}" for i in self.inputs)
        lines = [f"{indent}graph {self.name}({ins}) {{"]
        for n in self.nodes.values():
            if n.id in self.inputs:
                continue
            args = ", ".join(f"%{i}" for i in n.inputs)
            params = ", ".join(f"{k}={_fmt_param(v)}" for k, v in n.params.items())
            if n.ties:
                params += (", " if params else "") + "ties={" + ", ".join(f"{k}={v}" for k, v in n.ties.items()) + "}"
            sep = "; " if args and params else ""
            line = f"{indent}  %{n.id} : {n.type} = {n.op}({args}{sep}{params})"
            if annotations and "cost" in n.meta:
                c = n.meta["cost"]
                line += f"  # params={c.params:,} flops/token={c.flops:,.0f}"
            lines.append(line)
            if n.body is not None:
                lines.append(n.body.to_text(indent + "    ", annotations))
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
