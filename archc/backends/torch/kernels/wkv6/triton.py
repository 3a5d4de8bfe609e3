"""RWKV-6's WKV in Triton: the chunked forward and backward for training and prefill
(`templates/wkv6_chunk.py.jinja`, `archc::wkv6_chunk` and its backward, registered with
`torch.library` with autograd and fake implementations) and the decode step on the recurrent-step
kernel (rule "wkv"; kernels/recurrent_step/). Tested against `naive.py`
(tests/backends/torch/kernels/test_wkv6_chunk.py, test_recurrent_step.py)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.library import triton_op, wrap_triton

from archc.backends.torch.kernels.launch import chunk_cumsum, chunk_rows, from_chunk_rows
from archc.backends.torch.kernels.recurrent_step.triton import recurrent_step
from archc.backends.torch.kernels.wkv6.chunk_specialize import params as chunk_params
from archc.backends.triton.render import render


def triton_wkv6_step(r: Tensor, k: Tensor, v: Tensor, log_w: Tensor, u: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """`wkv6_step`'s contract: r, k, log_w [B, H, K]; v [B, H, V]; the bonus u [H, K]; state
    [B, H, K, V]. Returns (y [B, H, V], the new state), fp32."""
    return recurrent_step("wkv", r, k, v, log_w, u, state, False)


# -- the chunked forward and backward (templates/wkv6_chunk.py.jinja) ----------------------------


def _chunk_kernels(key: int, value: int) -> tuple[Any, dict[str, Any]]:
    p = chunk_params(key, value)
    return render("wkv6_chunk", **p).module, p


@triton_op("archc::wkv6_chunk", mutates_args=())
def _wkv6_chunk(r: Tensor, k: Tensor, v: Tensor, cum: Tensor, before: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    bh, t, key = r.shape
    value = v.shape[-1]
    kern, p = _chunk_kernels(key, value)
    chunks, blocks = t // p["C"], -(-value // p["BV"])
    states = torch.empty(bh, chunks + 1, key, value, dtype=torch.float32, device=r.device)
    y = torch.empty(bh, t, value, dtype=torch.float32, device=r.device)
    wrap_triton(kern.chunk_states)[(bh, blocks)](k, v, cum, states, t, chunks)
    wrap_triton(kern.chunk_output)[(bh, chunks, blocks)](r, k, v, cum, before, u, states, y, t, chunks, u.shape[0])
    return y, states


@_wkv6_chunk.register_fake
def _(r: Tensor, k: Tensor, v: Tensor, cum: Tensor, before: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    c = chunk_params(r.shape[-1], v.shape[-1])["C"]
    return (r.new_empty(*v.shape, dtype=torch.float32),
            r.new_empty(r.shape[0], r.shape[1] // c + 1, r.shape[-1], v.shape[-1], dtype=torch.float32))


@triton_op("archc::wkv6_chunk_backward", mutates_args=())
def _wkv6_chunk_backward(r: Tensor, k: Tensor, v: Tensor, cum: Tensor, before: Tensor, u: Tensor, states: Tensor,
                         dy: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    bh, t, key = r.shape
    value = v.shape[-1]
    kern, p = _chunk_kernels(key, value)
    chunks, blocks = t // p["C"], -(-value // p["BV"])
    d_states = torch.empty(bh, chunks, key, value, dtype=torch.float32, device=r.device)
    wrap_triton(kern.chunk_state_grads)[(bh, blocks)](r, cum, before, dy, d_states, t, chunks)
    dr = torch.empty(blocks, bh, t, key, dtype=torch.float32, device=r.device)  # partial over value blocks
    dk, dcum, dbefore = torch.empty_like(dr), torch.empty_like(dr), torch.empty_like(dr)
    dv = torch.empty(bh, t, value, dtype=torch.float32, device=r.device)
    du = torch.empty(blocks, bh, chunks, key, dtype=torch.float32, device=r.device)
    wrap_triton(kern.chunk_grads)[(bh, chunks, blocks)](r, k, v, cum, before, u, states, d_states, dy,
                                                        dr, dk, dv, dcum, dbefore, du, t, chunks, u.shape[0], bh * t)
    heads = u.shape[0]
    du = du.sum((0, 2)).view(bh // heads, heads, key).sum(0)
    return (dr.sum(0).to(r.dtype), dk.sum(0).to(k.dtype), dv.to(v.dtype), dcum.sum(0), dbefore.sum(0),
            du.to(u.dtype))


@_wkv6_chunk_backward.register_fake
def _(r: Tensor, k: Tensor, v: Tensor, cum: Tensor, before: Tensor, u: Tensor, states: Tensor,
      dy: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    return (torch.empty_like(r), torch.empty_like(k), torch.empty_like(v), torch.empty_like(cum),
            torch.empty_like(before), torch.empty_like(u))


def _setup(ctx: Any, inputs: tuple, output: tuple) -> None:
    ctx.save_for_backward(*inputs, output[1])


def _backward(ctx: Any, dy: Tensor, _d_states: Tensor | None) -> tuple:
    return _wkv6_chunk_backward(*ctx.saved_tensors, dy.contiguous())


_wkv6_chunk.register_autograd(_backward, setup_context=_setup)


def triton_wkv6(r: Tensor, k: Tensor, v: Tensor, log_w: Tensor, u: Tensor) -> Tensor:
    """`chunk.wkv6`'s output from a zero state (its forward's use: training, a prompt without
    state), forward and backward in Triton: r, k, log_w [B, H, T, K]; v [B, H, T, V]; u [H, K].
    Returns y [B, H, T, V] in fp32. The final state is not returned: its gradient would not flow,
    so state-carrying calls keep the torch form."""
    c = chunk_params(r.shape[-1], v.shape[-1])["C"]
    # log w summed through and before each token from its chunk's start (padding: w = 1, k = 0)
    lw = chunk_rows(log_w.float(), c)
    cum = chunk_cumsum(lw, c)
    y, _ = _wkv6_chunk(chunk_rows(r, c), chunk_rows(k, c), chunk_rows(v, c), cum, cum - lw, u.contiguous())
    return from_chunk_rows(y, r.shape[0], r.shape[2])
