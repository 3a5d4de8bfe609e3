"""The module contract every op's torch module follows (DESIGN.md §3–4).

An `OpModule` is a plain `nn.Module` built from one IR node. It has

* `forward(*inputs, ctx)`: the parallel form over a whole sequence (training, prefill);
* `init_state(batch, max_len, device, dtype)`: the per-sequence inference state as a tuple of
  tensors (empty for stateless ops) — KV caches, recurrent states, memories. It is built from the
  op record's declared state (`declared_state`, set by the builder): the module does not say
  what its state is, the record does, and `archc summary` and the ONNX backend read the same;
* `step(*inputs, state, ctx)`: the incremental form over the next `T_new ≥ 1` tokens given the
  state, returning the output and the new state. Stateless ops inherit `step = forward`.

State is a flat tuple of tensors, never Python lists or dicts, so that `step` exports with
`torch.export` and to ONNX as plain graph inputs and outputs. `state_names` names each tensor; the
model prefixes them with the node id.

`Context` carries what is shared by all ops of one call: the absolute positions of the tokens being
processed (so `step` at offset p sees positions p..p+T_new-1), the padding mask, optional token-type
ids, and the list that auxiliary losses (MoE balance, ACT ponder cost) are appended to.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from archc.backends.torch.context import Context
from archc.backends.torch.init import Init
from archc.ir.cost import StateTensor
from archc.ir.types import TensorType

State = tuple[Tensor, ...]


_STATE_DTYPES = {"fp32": torch.float32, "bool": torch.bool}


class OpModule(nn.Module):
    """Base class of the modules built from IR nodes; see the module docstring for the contract."""

    #: The op this module implements (set by the builder; several ops may share a class).
    op: str = ""
    #: The id of the IR node it was built from (set by the builder).
    node_id: str = ""
    #: The op record's declared state for this node (set by the builder).
    declared_state: tuple[StateTensor, ...] = ()
    #: Parameter names that take the scaled residual init (the record's `residual_weights`).
    residual_weights: tuple[str, ...] = ()
    #: True when the exported multi-token `step` is a loop over the one-token step (RMT), so the
    #: ONNX exporter uses that one graph for one token too instead of exporting a second form.
    exported_step_loops_over_tokens: bool = False

    @property
    def state_names(self) -> tuple[str, ...]:
        """Names of the state tensors, in `init_state` order."""
        return tuple(s.name for s in self.declared_state)

    def __init__(self, params: Any, in_types: list[TensorType], out_type: TensorType) -> None:
        super().__init__()
        self.params = params
        self.in_types = in_types
        self.out_type = out_type

    def init_state(self, batch: int, max_len: int, device: torch.device, dtype: torch.dtype) -> State:
        """The declared state, allocated: [batch, *shape] with `max_len` bound, filled with the
        declared value (or broadcast from the named parameter)."""
        out = []
        for s in self.declared_state:
            shape = (batch, *s.sizes(max_len))
            dt = _STATE_DTYPES.get(s.dtype, dtype)
            if isinstance(s.fill, str):
                start = self.get_parameter(s.fill).detach().to(device=device, dtype=dt)
                out.append(start.expand(shape).contiguous())
            else:
                out.append(torch.full(shape, s.fill, dtype=dt, device=device))
        return tuple(out)

    def step(self, *inputs: Tensor, state: State, ctx: Context) -> tuple[Tensor, State]:
        return self(*inputs, ctx=ctx), state

    def init_weights(self, init: Init) -> None:
        """Initialize this module's own parameters (default: `init.default` on every submodule)."""
        init.default(self)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.params.model_dump().items() if not isinstance(v, dict))
