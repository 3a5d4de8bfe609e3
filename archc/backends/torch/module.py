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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from archc.ir.cost import StateTensor
from archc.ir.types import TensorType

State = tuple[Tensor, ...]


@dataclass
class Context:
    #: [T] int64: absolute positions of the tokens in this call.
    positions: Tensor
    #: [B, T] bool, True for real tokens (padding mask of `forward`); None when nothing is padded.
    attention_mask: Tensor | None = None
    #: [B, T] int64 segment ids for `embed(..., token_types=n)`.
    token_type_ids: Tensor | None = None
    #: Auxiliary losses (already weighted) appended by ops during the call.
    aux_losses: list[Tensor] = field(default_factory=list)
    #: True inside `step` (incremental decoding).
    decoding: bool = False
    #: Per-call memo for values every layer would recompute (e.g. RoPE tables), keyed by the op.
    memo: dict[Any, Any] = field(default_factory=dict)

    def on_new_axis(self, length: int, device: torch.device) -> Context:
        """The context of ops on another time axis (e.g. Perceiver's latents): positions 0..length-1,
        no padding mask; auxiliary losses still go to the same list."""
        return Context(torch.arange(length, device=device), aux_losses=self.aux_losses, decoding=self.decoding)


def tracing() -> bool:
    """True under `torch.compile` / `torch.export`: eager-only shortcuts (data-dependent early
    exits, gathers by `nonzero`) must not be taken, or the traced graph would bake them in."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


Carry = tuple[Tensor, ...]


def exported_time_loop(step: Callable[[Any, Carry], tuple[Tensor, Carry]], xs: Tensor | tuple[Tensor, ...],
                       carry: Carry, out: Tensor, dim: int = 1, reverse: bool = False) -> tuple[Tensor, Carry]:
    """y_t, carry = step(x_t, carry) for every t along `dim` of xs, as one `while_loop`: what a
    recurrence without an elementwise scan form (LSTM, GRU, sLSTM, S4's multi-token step, the
    gated delta rule's chunks) becomes under `torch.export`, where a Python loop would bake the
    traced length in and `aten.lstm` is unrolled over it. The trip count stays the symbolic length.
    `xs` is one tensor or a tuple of tensors sharing that axis (then step gets the tuple of their
    slices). `out` is zeros shaped like the stacked outputs (written with `index_copy`);
    `reverse` runs right to left. Returns (outputs, final carry)."""
    from torch._higher_order_ops.while_loop import while_loop

    t = (xs[0] if isinstance(xs, tuple) else xs).shape[dim]

    def at_step(x: Tensor, at: Tensor) -> Tensor:
        return x.index_select(dim, at).squeeze(dim)

    def more(i: Tensor, out: Tensor, *carry: Tensor) -> Tensor:
        return i < t

    def one(i: Tensor, out: Tensor, *carry: Tensor) -> tuple[Tensor, ...]:
        at = (t - 1 - i if reverse else i).reshape(1)
        x_t = tuple(at_step(x, at) for x in xs) if isinstance(xs, tuple) else at_step(xs, at)
        y, carry = step(x_t, carry)
        return (i + 1, out.index_copy(dim, at, y.unsqueeze(dim)), *carry)

    start = torch.zeros((), dtype=torch.long, device=out.device)
    _, out, *final = while_loop(more, one, (start, out, *(c.clone() for c in carry)))
    return out, tuple(final)


#: Tokens per piece of `segmented_forward`.
SEGMENT = 2048


def segmented_forward(mod: OpModule, x: Tensor, ctx: Context | None) -> Tensor | None:
    """A recurrent mixer's forward over a long sequence in eager inference, as consecutive
    `step`s of `SEGMENT` tokens that carry the state (chunked prefill): the same values — step
    equals forward for every chunking, tested for every mixer — with each intermediate tensor
    [B, SEGMENT, ·] instead of [B, T, ·], so it stays in cache (mamba-tiny at 16k tokens: 4.4 →
    3.2 s). None where it does not apply: T ≤ 2·SEGMENT, autograd on, or tracing."""
    t = x.shape[1]
    if t <= 2 * SEGMENT or torch.is_grad_enabled() or tracing():
        return None
    positions = ctx.positions if ctx is not None else torch.arange(t, device=x.device)
    mask = ctx.attention_mask if ctx is not None else None
    aux = ctx.aux_losses if ctx is not None else []
    state = mod.init_state(x.shape[0], t, x.device, x.dtype)
    ys = []
    for start in range(0, t, SEGMENT):
        piece = slice(start, start + SEGMENT)
        sub = Context(positions[piece], None if mask is None else mask[:, piece], aux_losses=aux)
        y, state = mod.step(x[:, piece], state=state, ctx=sub)
        ys.append(y)
    return torch.cat(ys, dim=1)


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


class Init:
    """Weight initialization with a seeded generator, bit-for-bit reproducible on any device.

    Values are drawn on the CPU from one `torch.Generator` in node order and copied to the
    parameter's device, so a seed gives the same weights on CPU and CUDA. Defaults follow GPT-2 /
    Llama: linear and embedding weights N(0, std=0.02), biases zero, norm scales one; the output
    projections of residual branches (the weights each op record lists as `residual_weights`:
    attention's `o_proj.weight`, an FFN's `down_proj.weight`, …) use std/√(2·n_layers) (GPT-2's
    scaled residual init, Radford et al. 2019), with n_layers the number of token mixers.
    """

    def __init__(self, seed: int, std: float = 0.02, n_layers: int = 1,
                 op_counts: dict[str, int] | None = None) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.std = std
        self.residual_std = std / (2 * max(n_layers, 1)) ** 0.5
        #: How many nodes of each op the model has (depth-dependent inits, e.g. RWKV's).
        self.op_counts: dict[str, int] = dict(op_counts or {})
        self._seen: dict[str, int] = {}

    def layer_index(self, op: str) -> int:
        """0, 1, 2, … on successive calls for `op`: the depth of the module being initialized
        among the model's nodes of that op (modules are initialized in node order)."""
        i = self._seen.get(op, 0)
        self._seen[op] = i + 1
        return i

    def normal_(self, t: Tensor, std: float | None = None, mean: float = 0.0) -> None:
        v = torch.randn(t.shape, generator=self.gen, dtype=torch.float32) * (self.std if std is None else std) + mean
        with torch.no_grad():
            t.copy_(v.to(t.dtype))

    def uniform_(self, t: Tensor, low: float, high: float) -> None:
        v = torch.rand(t.shape, generator=self.gen, dtype=torch.float32) * (high - low) + low
        with torch.no_grad():
            t.copy_(v.to(t.dtype))

    def randn(self, *shape: int) -> Tensor:
        return torch.randn(shape, generator=self.gen, dtype=torch.float32)

    def default(self, module: nn.Module) -> None:
        """N(0, std) for linear/embedding/conv weights (the residual std for the module's
        `residual_weights`), zeros for biases, ones for norm scales."""
        residual_names = set(getattr(module, "residual_weights", ()))
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "bias":
                with torch.no_grad():
                    p.zero_()
            elif p.dim() == 1:
                with torch.no_grad():
                    p.fill_(1.0)
            else:
                self.normal_(p, self.residual_std if name in residual_names else None)

    def residual_(self, module: nn.Module) -> None:
        """Draw the module's residual output projections (again) at the residual std: after an
        init of the module's own, or after `default` where the module has always drawn them a
        second time (kept, so that a seed gives the weights it gave before)."""
        for name in getattr(module, "residual_weights", ()):
            self.normal_(module.get_parameter(name), self.residual_std)
