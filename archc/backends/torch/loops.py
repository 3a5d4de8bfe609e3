"""Loops over time that the modules share: the `while_loop` a recurrence without an elementwise
scan form becomes under `torch.export`, and chunked prefill of long eager-inference forwards."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from archc.backends.torch.context import Context, tracing

if TYPE_CHECKING:
    from archc.backends.torch.module import OpModule


Carry = tuple[Tensor, ...]


def exported_time_loop(step: Callable[[Any, Carry], tuple[Any, Carry]], xs: Tensor | tuple[Tensor, ...],
                       carry: Carry, out: Tensor | tuple[Tensor, ...], dim: int = 1,
                       reverse: bool = False, as_scan: bool = False) -> tuple[Any, Carry]:
    """y_t, carry = step(x_t, carry) for every t along `dim` of xs, as one `while_loop`: what a
    recurrence without an elementwise scan form (LSTM, GRU, sLSTM, S4's multi-token step, the
    gated delta rule's chunks) becomes under `torch.export`, where a Python loop would bake the
    traced length in and `aten.lstm` is unrolled over it. The trip count stays the symbolic length.
    `xs` is one tensor or a tuple of tensors sharing that axis (then step gets the tuple of their
    slices). `out` is zeros shaped like the stacked outputs (written with `index_copy`), or a
    tuple of them when step returns a tuple; `reverse` runs right to left. Returns (outputs,
    final carry).

    `as_scan`: torch's `scan` instead (an ONNX `Scan`, which slices its inputs and writes its
    outputs in place, where the `Loop` gathers every input slice and scatters into a copy of the
    whole output each step: Mamba's prefill in onnxruntime 103 → 85 ms). Not the default: `scan`
    retraces the body with fresh symbolic sizes and, for some bodies (the SSD kernel's chunk
    combination), torch.export then specializes the trip count; used where it is tested to export.
    The scan form stacks the outputs itself: `out` is not read."""
    if as_scan:
        return _scan(step, xs, carry, dim, reverse)
    from torch._higher_order_ops.while_loop import while_loop

    t = (xs[0] if isinstance(xs, tuple) else xs).shape[dim]
    outs = out if isinstance(out, tuple) else (out,)
    n_out = len(outs)

    def at_step(x: Tensor, at: Tensor) -> Tensor:
        return x.index_select(dim, at).squeeze(dim)

    def more(i: Tensor, *rest: Tensor) -> Tensor:
        return i < t

    def one(i: Tensor, *rest: Tensor) -> tuple[Tensor, ...]:
        at = (t - 1 - i if reverse else i).reshape(1)
        x_t = tuple(at_step(x, at) for x in xs) if isinstance(xs, tuple) else at_step(xs, at)
        y, new = step(x_t, tuple(rest[n_out:]))
        ys = y if isinstance(y, tuple) else (y,)
        written = tuple(o.index_copy(dim, at, v.unsqueeze(dim)) for o, v in zip(rest[:n_out], ys, strict=True))
        return (i + 1, *written, *new)

    start = torch.zeros((), dtype=torch.long, device=outs[0].device)
    _, *rest = while_loop(more, one, (start, *outs, *(c.clone() for c in carry)))
    written = tuple(rest[:n_out])
    return (written if isinstance(out, tuple) else written[0]), tuple(rest[n_out:])


def exported_fold(step: Callable[[Any, Carry], Carry], xs: Tensor | tuple[Tensor, ...], carry: Carry,
                  dim: int = 1, as_scan: bool = False) -> Carry:
    """carry = step(x_t, carry) for every t along `dim` of xs, as one `while_loop`, keeping only
    the final carry (`exported_time_loop` without outputs): a chunked scan's first pass, which
    needs each chunk's end state and nothing per position. `as_scan` as `exported_time_loop`'s."""
    if as_scan:
        return _scan(lambda x, c: ((), step(x, c)), xs, carry, dim, False)[1]
    from torch._higher_order_ops.while_loop import while_loop

    t = (xs[0] if isinstance(xs, tuple) else xs).shape[dim]

    def more(i: Tensor, *carry: Tensor) -> Tensor:
        return i < t

    def one(i: Tensor, *carry: Tensor) -> tuple[Tensor, ...]:
        at = i.reshape(1)
        x_t = tuple(x.index_select(dim, at).squeeze(dim) for x in xs) if isinstance(xs, tuple) else \
            xs.index_select(dim, at).squeeze(dim)
        return (i + 1, *step(x_t, carry))

    start = torch.zeros((), dtype=torch.long, device=carry[0].device)
    _, *final = while_loop(more, one, (start, *(c.clone() for c in carry)))
    return tuple(final)


def _scan(step: Callable[[Any, Carry], tuple[Any, Carry]], xs: Tensor | tuple[Tensor, ...], carry: Carry,
          dim: int, reverse: bool) -> tuple[Any, Carry]:
    """`exported_time_loop` as torch's `scan`: outputs of any pytree structure, stacked along `dim`."""
    from torch._higher_order_ops.scan import scan
    from torch.utils._pytree import tree_map

    packed = isinstance(xs, tuple)

    def combine(c: list[Tensor], x: list[Tensor]) -> tuple[list[Tensor], Any]:
        y, new = step(tuple(x) if packed else x[0], tuple(c))
        return [_fresh(t) for t in new], tree_map(_fresh, y)

    final, ys = scan(combine, [_fresh(c) for c in carry], [x.movedim(dim, 0) for x in (xs if packed else (xs,))],
                     dim=0, reverse=reverse)
    return tree_map(lambda y: y.movedim(0, dim), ys), tuple(final)


def _fresh(t: Tensor) -> Tensor:
    """A contiguous copy: `scan` wants carries of one layout that alias nothing (an ONNX Identity)."""
    return t.clone(memory_format=torch.contiguous_format)


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


def kept_state_scan(step: Callable[[Tensor, Carry], tuple[Tensor, Carry]], xs: Tensor, keep: Tensor, state: Carry,
                    out_width: int) -> tuple[Tensor, Carry]:
    """outputs_t, state = step(xs_t, state) over the tokens of xs [B, T, ·] for a recurrence that
    is nonlinear in its state (no parallel form: the NTM's and DNC's memories), where `keep`
    [B, T] False (padding) leaves a sequence's state as it was. Python in eager mode, one
    `while_loop` under `torch.export` (the length stays symbolic). Returns (outputs [B, T,
    out_width], the final state)."""

    def one(x: tuple[Tensor, Tensor], carry: Carry) -> tuple[Tensor, Carry]:
        x_t, keep_t = x
        out, new = step(x_t, carry)
        return out, tuple(torch.where(keep_t.reshape(-1, *([1] * (n.dim() - 1))), n, c)
                          for n, c in zip(new, carry, strict=True))

    if torch.compiler.is_exporting():
        return exported_time_loop(one, (xs, keep), state, xs.new_zeros(*xs.shape[:2], out_width))
    outs = []
    for t in range(xs.shape[1]):
        out, state = one((xs[:, t], keep[:, t]), state)
        outs.append(out)
    return torch.stack(outs, 1), state
