"""Fuse a dense layer into the activation that reads it (`linear` → `gelu` becomes
`linear_act(act=gelu)`): at `--target ort` the bias is added inside the activation's kernel
(`BiasGelu`, onnxruntime's transformer optimizer's fusion of BERT's MLP), so the projection's
output is read and written once instead of twice.

The fused node keeps the linear's id, so its weights keep their names (`proj.weight`): checkpoints
need no mapping. `mlp`, whose up-projection and activation are one IR node already, gets the same
operators from its own lowering; this pass is for projections a spec writes out. It runs at O2
only: eager PyTorch runs the same two kernels either way.
"""

from __future__ import annotations

from archc.ir.graph import Graph, Node
from archc.ops.ffn import LinearActivation
from archc.passes.manager import NoOptions, register_pass
from archc.passes.rewrite import Fused, Rewrite, fuse


def _fused(graph: Graph, nodes: tuple[Node, ...]) -> Fused:
    linear, act = nodes
    node = linear.model_copy(update={"op": "linear_act", "params": {**linear.params, "act": act.op},
                                     "type": act.type, "meta": {}})
    return Fused((node,), {act.id: linear.id})


FUSE_BIAS_ACT = tuple(Rewrite(f"fuse_bias_act:{act}", ("linear", act), _fused)
                      for act in LinearActivation.__args__)


@register_pass("fuse_bias_act", "a dense layer and the activation that reads it in one op (linear_act)")
def fuse_bias_act(graph: Graph, options: NoOptions) -> Graph:
    for rewrite in FUSE_BIAS_ACT:
        graph = fuse(graph, rewrite)
    return graph
