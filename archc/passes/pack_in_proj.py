"""Pack a recurrent mixer's input projections into one matmul (`retention` → `retention_packed`:
RetNet's q, k, v and g as one [2·H·dk + 2·H·dv, d] weight, read once per step instead of four).

A decoding step of a recurrent mixer is a handful of small matmuls and elementwise work, so the
number of matmuls, not their FLOPs, sets its time; the step fusions inside one mixer node (a
short convolution with its activation, a gate with its norm) are its lowering's choice of
operator, not IR rewrites (docs/passes.md "Inside a mixer"). Mixers whose projections are one
matmul already (Mamba's and Mamba-2's `in_proj`) do not match; the others that match are
reported with why they stay as they are:

* `gated_deltanet` keeps Qwen3-Next's two projections: `in_proj_ba` makes β and α (precision
  class `decay`, kept in fp32 when the rest is quantized), `in_proj_qkvz` the rest;
* `rwkv_time_mix` projects r, k and v from three different token-shift mixes of x and x_{t−1},
  so no one input feeds them all.

The packed op's declared weight `qkvg_proj.weight` says what it packs, so checkpoints keep the
canonical layout (docs/passes.md).
"""

from __future__ import annotations

from archc.ir.graph import Graph, Node
from archc.passes.manager import NoOptions, register_pass
from archc.passes.rewrite import Rewrite, fuse


def _packed(graph: Graph, nodes: tuple[Node, ...]) -> Node:
    (n,) = nodes
    return n.model_copy(update={"op": f"{n.op}_packed"})


def _refuse(reason: str):
    return lambda graph, nodes: reason


PACK_IN_PROJ = (
    Rewrite("pack_in_proj:retention", ("retention",), _packed),
    Rewrite("pack_in_proj:gated_deltanet", ("gated_deltanet",), _packed,
            _refuse("in_proj_ba (β and α, precision class decay: kept fp32 when quantized) stays apart from "
                    "in_proj_qkvz")),
    Rewrite("pack_in_proj:rwkv_time_mix", ("rwkv_time_mix",), _packed,
            _refuse("r, k and v read three different token-shift mixes of x, not one input")),
)


@register_pass("pack_in_proj", "a recurrent mixer's input projections packed into one matmul (retention's q, k, v, g)")
def pack_in_proj(graph: Graph, options: NoOptions) -> Graph:
    for rewrite in PACK_IN_PROJ:
        graph = fuse(graph, rewrite)
    return graph
