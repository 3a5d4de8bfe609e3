"""The scalar-decay recurrence (Mamba-2's SSD, RetNet's retention) in Triton: the chunked forward
and backward (`templates/decay_chunk.py.jinja`, `archc::decay_chunk` and its backward, registered
with `torch.library` with autograd and fake implementations) and the decode step on the
recurrent-step kernel (rule "decay"; kernels/recurrent_step/). Tested against `naive.py`
(tests/backends/torch/kernels/test_decay_chunk.py, test_recurrent_step.py)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.library import triton_op, wrap_triton

from archc.backends.torch.kernels.launch import chunk_cumsum, chunk_rows, from_chunk_rows
from archc.backends.torch.kernels.recurrent_step.triton import recurrent_step
from archc.backends.torch.kernels.ssd.chunk_specialize import params as chunk_params
from archc.backends.triton.render import render


def triton_decay_step(q: Tensor, k: Tensor, v: Tensor, log_a: Tensor, state: Tensor,
                      v_major: bool = False) -> tuple[Tensor, Tensor]:
    """One token of S ← exp(log_a) S + kᵀ v, y = q S: q, k [B, H, K]; v [B, H, V]; log_a [B, H];
    state [B, H, K, V] ([B, H, V, K] with `v_major`). Returns (y [B, H, V], the new state), fp32."""
    return recurrent_step("decay", q, k, v, log_a, log_a, state, v_major)


# -- the chunked forward and backward (templates/decay_chunk.py.jinja) ---------------------------


def _chunk_kernels(key: int, value: int, chunk: int) -> tuple[Any, dict[str, Any]]:
    p = chunk_params(key, value, chunk)
    return render("decay_chunk", **p).module, p


@triton_op("archc::decay_chunk", mutates_args=())
def _decay_chunk(q: Tensor, k: Tensor, v: Tensor, g: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
    bh, t, key = q.shape
    value = v.shape[-1]
    kern, p = _chunk_kernels(key, value, chunk)
    chunks, blocks = t // p["C"], -(-value // p["BV"])
    states = torch.empty(bh, chunks + 1, key, value, dtype=torch.float32, device=q.device)
    y = torch.empty(bh, t, value, dtype=torch.float32, device=q.device)
    wrap_triton(kern.chunk_states)[(bh, blocks)](k, v, g, states, t, chunks)
    wrap_triton(kern.chunk_output)[(bh, chunks, blocks)](q, k, v, g, states, y, t, chunks)
    return y, states


@_decay_chunk.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, g: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
    c = chunk_params(q.shape[-1], v.shape[-1], chunk)["C"]
    return (q.new_empty(*v.shape, dtype=torch.float32),
            q.new_empty(q.shape[0], q.shape[1] // c + 1, q.shape[-1], v.shape[-1], dtype=torch.float32))


@triton_op("archc::decay_chunk_backward", mutates_args=())
def _decay_chunk_backward(q: Tensor, k: Tensor, v: Tensor, g: Tensor, states: Tensor, dy: Tensor,
                          chunk: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    bh, t, key = q.shape
    value = v.shape[-1]
    kern, p = _chunk_kernels(key, value, chunk)
    chunks, blocks = t // p["C"], -(-value // p["BV"])
    d_states = torch.empty(bh, chunks, key, value, dtype=torch.float32, device=q.device)
    wrap_triton(kern.chunk_state_grads)[(bh, blocks)](q, g, dy, d_states, t, chunks)
    dq = torch.empty(blocks, bh, t, key, dtype=torch.float32, device=q.device)  # partial over value blocks
    dk = torch.empty_like(dq)
    dv = torch.empty(bh, t, value, dtype=torch.float32, device=q.device)
    dg = torch.empty(blocks, bh, t, dtype=torch.float32, device=q.device)
    wrap_triton(kern.chunk_grads)[(bh, chunks, blocks)](q, k, v, g, states, d_states, dy, dq, dk, dv, dg, t, chunks,
                                                        bh * t)
    return dq.sum(0).to(q.dtype), dk.sum(0).to(k.dtype), dv.to(v.dtype), dg.sum(0)


@_decay_chunk_backward.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, g: Tensor, states: Tensor, dy: Tensor,
      chunk: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(g, dtype=torch.float32)


def _setup(ctx: Any, inputs: tuple, output: tuple) -> None:
    q, k, v, g, chunk = inputs
    ctx.chunk = chunk
    ctx.save_for_backward(q, k, v, g, output[1])


def _backward(ctx: Any, dy: Tensor, _d_states: Tensor | None) -> tuple:
    q, k, v, g, states = ctx.saved_tensors
    dq, dk, dv, dg = _decay_chunk_backward(q, k, v, g, states, dy.contiguous(), ctx.chunk)
    return dq, dk, dv, dg, None


_decay_chunk.register_autograd(_backward, setup_context=_setup)


def triton_chunked_decay_attention(q: Tensor, k: Tensor, v: Tensor, log_a: Tensor, chunk: int = 64) -> Tensor:
    """`chunk.chunked_decay_attention`'s output from a zero state (its forward's use: training,
    a prompt without state), forward and backward in Triton: q, k [B, H, T, K]; v [B, H, T, V];
    log_a [B, H, T]. Returns y [B, H, T, V] in fp32. The final state is not returned: its gradient
    would not flow, so state-carrying calls keep the torch form."""
    c = chunk_params(q.shape[-1], v.shape[-1], chunk)["C"]
    # g: the log-decay summed from each chunk's start (padding decays by 1 and writes nothing)
    g = chunk_cumsum(chunk_rows(log_a.float(), c), c)
    y, _ = _decay_chunk(chunk_rows(q, c), chunk_rows(k, c), chunk_rows(v, c), g, c)
    return from_chunk_rows(y, q.shape[0], q.shape[2])
