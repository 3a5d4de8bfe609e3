"""Pack self-attention's query, key and value projections into one matmul (`attention` →
`attention_packed`): one [(H + 2·KV)·hd, d] weight read once instead of three, GQA's narrower
keys and values included (onnxruntime-genai's builder packs them the same way for its
`GroupQueryAttention`).

Cross-attention (`kv=`) is not packed: its keys and values read the memory, not `x`. The packed
op's declared weight `qkv_proj.weight` says what it packs, so checkpoints keep the canonical
layout (docs/passes.md).
"""

from __future__ import annotations

from archc.ir.graph import Graph, Node
from archc.passes.manager import NoOptions, register_pass
from archc.passes.rewrite import Rewrite, fuse


def _packed(graph: Graph, nodes: tuple[Node, ...]) -> Node:
    (n,) = nodes
    return n.model_copy(update={"op": "attention_packed"})


def _self_attention(graph: Graph, nodes: tuple[Node, ...]) -> str | None:
    (n,) = nodes
    return "cross-attention: its keys and values read the memory, not x" if len(n.inputs) > 1 else None


PACK_QKV = Rewrite("pack_qkv", ("attention",), _packed, _self_attention)


@register_pass("pack_qkv", "self-attention's q, k and v projections packed into one matmul (GQA widths included)")
def pack_qkv(graph: Graph, options: NoOptions) -> Graph:
    return fuse(graph, PACK_QKV)
