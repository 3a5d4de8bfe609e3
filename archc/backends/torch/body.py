"""Ops around a block: the node's body graph, run by its own interpreter.

Higher-order ops (`act`, `mod`, `recurrent_memory`) take `block=…`; the IR keeps the block as the
node's body `Graph`. `BodyOp` builds it as a `GraphModule` under `<node>.body` (so its parameters
are `<node>.body.<inner node id>.…`). The op's state — its own and its body's, renamed or repeated
by the record's `body_state` rule — is the record's declared state like any op's.
"""

from __future__ import annotations

from torch import nn

from archc.backends.torch.init import Init
from archc.backends.torch.module import OpModule


class BodyOp(OpModule):
    """An op whose module runs the node's body block. Subclasses initialize their own parameters
    before the body's."""

    body: nn.Module

    @classmethod
    def build(cls, p, in_types, out_type, bctx) -> BodyOp:
        mod = cls(p, in_types, out_type)
        mod.body = bctx.build_graph(bctx.node.body)
        return mod

    def init_weights(self, init: Init) -> None:
        self.body.init_weights(init)
