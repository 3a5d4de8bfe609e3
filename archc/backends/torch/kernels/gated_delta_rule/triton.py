"""The gated delta rule in Triton: the chunked WY forward and backward for training and prefill
(`templates/delta_chunk.py.jinja`, `archc::delta_chunk` and its backward, registered with
`torch.library` with autograd and fake implementations) and the decode step on the
recurrent-step kernel (rule "delta"; kernels/recurrent_step/). Tested against `naive.py`
(tests/backends/torch/kernels/test_delta_chunk.py, test_recurrent_step.py)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.library import triton_op, wrap_triton

from archc.backends.torch.kernels.gated_delta_rule.chunk_specialize import params as chunk_params
from archc.backends.torch.kernels.launch import chunk_cumsum, chunk_rows, from_chunk_rows
from archc.backends.torch.kernels.recurrent_step.triton import recurrent_step
from archc.backends.triton.render import render


def triton_delta_rule_step(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
                           state: Tensor) -> tuple[Tensor, Tensor]:
    """`gated_delta_rule_step`'s contract: q, k [B, H, K], v [B, H, V], g (log α), β [B, H], state
    [B, H, K, V]. Returns (o [B, H, V], the new state), fp32."""
    return recurrent_step("delta", q, k, v, g, beta, state, False)


# -- the chunked forward and backward (templates/delta_chunk.py.jinja) ---------------------------


def _chunk_kernels(key: int, value: int, chunk: int) -> tuple[Any, dict[str, Any]]:
    p = chunk_params(key, value, chunk)
    return render("delta_chunk", **p).module, p


def _wy(kern: Any, k: Tensor, v: Tensor, gamma: Tensor, beta: Tensor, chunks: int) -> tuple[Tensor, Tensor]:
    """W, U of every chunk (`chunk_prep`): the forward's, and again the backward's (cheaper than
    keeping them)."""
    bh, t, _ = k.shape
    w = torch.empty(k.shape, dtype=torch.float32, device=k.device)
    u = torch.empty(v.shape, dtype=torch.float32, device=k.device)
    wrap_triton(kern.chunk_prep)[(bh, chunks)](k, v, gamma, beta, w, u, t)
    return w, u


@triton_op("archc::delta_chunk", mutates_args=())
def _delta_chunk(q: Tensor, k: Tensor, v: Tensor, gamma: Tensor, beta: Tensor,
                 chunk: int) -> tuple[Tensor, Tensor, Tensor]:
    bh, t, key = q.shape
    value = v.shape[-1]
    kern, p = _chunk_kernels(key, value, chunk)
    chunks = t // p["C"]
    w, u = _wy(kern, k, v, gamma, beta, chunks)
    states = torch.empty(bh, chunks + 1, key, value, dtype=torch.float32, device=q.device)
    v_new = torch.empty_like(u)
    o = torch.empty_like(u)
    wrap_triton(kern.chunk_states)[(bh,)](k, gamma, w, u, states, v_new, t, chunks)
    wrap_triton(kern.chunk_output)[(bh, chunks)](q, k, gamma, states, v_new, o, t, chunks)
    return o, states, v_new


@_delta_chunk.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, gamma: Tensor, beta: Tensor, chunk: int) -> tuple[Tensor, Tensor, Tensor]:
    c = chunk_params(q.shape[-1], v.shape[-1], chunk)["C"]
    o = q.new_empty(*v.shape, dtype=torch.float32)
    return o, q.new_empty(q.shape[0], q.shape[1] // c + 1, q.shape[-1], v.shape[-1], dtype=torch.float32), torch.empty_like(o)


@triton_op("archc::delta_chunk_backward", mutates_args=())
def _delta_chunk_backward(q: Tensor, k: Tensor, v: Tensor, gamma: Tensor, beta: Tensor, states: Tensor,
                          v_new: Tensor, do: Tensor, chunk: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    bh, t, key = q.shape
    value = v.shape[-1]
    kern, p = _chunk_kernels(key, value, chunk)
    chunks = t // p["C"]
    w, _ = _wy(kern, k, v, gamma, beta, chunks)
    d_states = torch.empty(bh, chunks, key, value, dtype=torch.float32, device=q.device)
    wrap_triton(kern.chunk_state_grads)[(bh,)](q, k, gamma, w, do, d_states, t, chunks)
    dq = torch.empty(bh, t, key, dtype=torch.float32, device=q.device)
    dk = torch.empty_like(dq)
    dv = torch.empty(bh, t, value, dtype=torch.float32, device=q.device)
    dgamma = torch.empty(bh, t, dtype=torch.float32, device=q.device)
    dbeta = torch.empty_like(dgamma)
    wrap_triton(kern.chunk_grads)[(bh, chunks)](q, k, v, gamma, beta, states, v_new, d_states, do,
                                                 dq, dk, dv, dgamma, dbeta, t, chunks)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dgamma, dbeta.to(beta.dtype)


@_delta_chunk_backward.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, gamma: Tensor, beta: Tensor, states: Tensor, v_new: Tensor,
      do: Tensor, chunk: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v),
            torch.empty_like(gamma, dtype=torch.float32), torch.empty_like(beta))


def _setup(ctx: Any, inputs: tuple, output: tuple) -> None:
    q, k, v, gamma, beta, chunk = inputs
    ctx.chunk = chunk
    ctx.save_for_backward(q, k, v, gamma, beta, output[1], output[2])


def _backward(ctx: Any, do: Tensor, _d_states: Tensor | None, _d_v_new: Tensor | None) -> tuple:
    q, k, v, gamma, beta, states, v_new = ctx.saved_tensors
    grads = _delta_chunk_backward(q, k, v, gamma, beta, states, v_new, do.contiguous(), ctx.chunk)
    return (*grads, None)


_delta_chunk.register_autograd(_backward, setup_context=_setup)


def triton_chunk_gated_delta_rule(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
                                  chunk: int = 64) -> Tensor:
    """`chunk.chunk_gated_delta_rule`'s output from a zero state (its forward's use: training, a
    prompt without state), forward and backward in Triton: q, k [B, H, T, K] (q scaled); v
    [B, H, T, V]; g = log α and β [B, H, T]. Returns o [B, H, T, V] in fp32. The final state is
    not returned: its gradient would not flow, so state-carrying calls keep the torch form."""
    c = chunk_params(q.shape[-1], v.shape[-1], chunk)["C"]
    # γ: log α summed from each chunk's start (padding: α = 1, β = 0: no decay, no write)
    gamma = chunk_cumsum(chunk_rows(g.float(), c), c)
    o, _, _ = _delta_chunk(chunk_rows(q, c), chunk_rows(k, c), chunk_rows(v, c), gamma, chunk_rows(beta.float(), c), c)
    return from_chunk_rows(o, q.shape[0], q.shape[2])
