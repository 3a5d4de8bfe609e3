"""Ops around a block: the node's body graph, run by its own interpreter.

Higher-order ops (`act`, `mod`, `recurrent_memory`) take `block=…`; the IR keeps the block as the
node's body `Graph`. `BodyOp` builds it as a `GraphModule` under `<node>.body` (so its parameters
are `<node>.body.<inner node id>.…`) and names the op's state from the body's.
"""

from __future__ import annotations

from torch import nn

from archc.backends.torch.module import Init, OpModule


class BodyOp(OpModule):
    """An op whose module runs the node's body block. Subclasses name their state from the body's
    (`body_state_names`) and initialize their own parameters before the body's."""

    body: nn.Module

    @classmethod
    def build(cls, p, in_types, out_type, bctx) -> BodyOp:
        from archc.backends.torch.model import GraphModule  # the interpreter builds op modules itself

        mod = cls(p, in_types, out_type)
        mod.body = GraphModule(bctx.node.body)
        mod.state_names = mod.body_state_names(mod.body.state_names)
        return mod

    def body_state_names(self, names: tuple[str, ...]) -> tuple[str, ...]:
        return names

    def init_weights(self, init: Init) -> None:
        self.body.init_weights(init)
