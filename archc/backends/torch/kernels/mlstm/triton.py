"""The mLSTM memory in Triton: the chunked, max-stabilized forward and backward for training and
prefill (`templates/mlstm_chunk.py.jinja`, `archc::mlstm_chunk` and its backward, registered with
`torch.library` with autograd and fake implementations) and the decode step on the recurrent-step
kernel (rule "mlstm"; kernels/recurrent_step/). Tested against `naive.py`
(tests/backends/torch/kernels/test_mlstm_chunk.py, test_recurrent_step.py)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.library import triton_op, wrap_triton

from archc.backends.torch.kernels.common import NEG, StableState
from archc.backends.torch.kernels.launch import chunk_cumsum, chunk_rows, from_chunk_rows
from archc.backends.torch.kernels.mlstm.chunk import lower_bound
from archc.backends.torch.kernels.mlstm.chunk_specialize import EPS
from archc.backends.torch.kernels.mlstm.chunk_specialize import params as chunk_params
from archc.backends.torch.kernels.recurrent_step.triton import mlstm_step_op
from archc.backends.triton.render import render


def triton_mlstm_step(q: Tensor, k: Tensor, v: Tensor, log_f: Tensor, i: Tensor,
                      state: StableState) -> tuple[Tensor, StableState]:
    """`mlstm_step`'s contract (eps 1e-6): q, k, v [B, H, D]; log f, i [B, H]; the memory (C, n, m).
    Returns (h [B, H, D], the new memory), fp32."""
    y, c, n, m = mlstm_step_op(q, k, v, log_f, i, *state)
    return y, (c, n, m)


# -- the chunked forward and backward (templates/mlstm_chunk.py.jinja) ---------------------------


def _chunk_kernels(key: int, value: int, chunk: int) -> tuple[Any, dict[str, Any]]:
    p = chunk_params(key, value, chunk)
    return render("mlstm_chunk", **p).module, p


def _memories(bh: int, chunks: int, key: int, value: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    return (torch.empty(bh, chunks, key, value, dtype=torch.float32, device=device),
            torch.empty(bh, chunks, key, dtype=torch.float32, device=device),
            torch.empty(bh, chunks, dtype=torch.float32, device=device))


@triton_op("archc::mlstm_chunk", mutates_args=())
def _mlstm_chunk(q: Tensor, k: Tensor, v: Tensor, cum: Tensor, ig: Tensor,
                 chunk: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    bh, t, key = q.shape
    value = v.shape[-1]
    kern, p = _chunk_kernels(key, value, chunk)
    chunks, blocks = t // p["C"], -(-value // p["BV"])
    c, n, m = _memories(bh, chunks + 1, key, value, q.device)
    h = torch.empty(bh, t, value, dtype=torch.float32, device=q.device)
    m_rows, den = torch.empty_like(cum), torch.empty_like(cum)
    wrap_triton(kern.chunk_states)[(bh, blocks)](k, v, cum, ig, c, n, m, t, chunks)
    wrap_triton(kern.chunk_output)[(bh, chunks, blocks)](q, k, v, cum, ig, c, n, m, h, m_rows, den, t, chunks)
    return h, c, n, m, m_rows, den


@_mlstm_chunk.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, cum: Tensor, ig: Tensor,
      chunk: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    chunks = q.shape[1] // chunk_params(q.shape[-1], v.shape[-1], chunk)["C"]
    c, n, m = (x.new_empty(x.shape) for x in _memories(q.shape[0], chunks + 1, q.shape[-1], v.shape[-1], q.device))
    return q.new_empty(*v.shape, dtype=torch.float32), c, n, m, torch.empty_like(cum), torch.empty_like(cum)


@triton_op("archc::mlstm_chunk_backward", mutates_args=())
def _mlstm_chunk_backward(q: Tensor, k: Tensor, v: Tensor, cum: Tensor, ig: Tensor, c: Tensor, n: Tensor, m: Tensor,
                          m_rows: Tensor, dnum: Tensor, dden: Tensor,
                          chunk: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    bh, t, key = q.shape
    value = v.shape[-1]
    kern, p = _chunk_kernels(key, value, chunk)
    chunks, blocks = t // p["C"], -(-value // p["BV"])
    dc, dn, _ = _memories(bh, chunks, key, value, q.device)
    wrap_triton(kern.chunk_state_grads)[(bh, blocks)](q, cum, m, m_rows, dnum, dden, dc, dn, t, chunks)
    dq = torch.empty(blocks, bh, t, key, dtype=torch.float32, device=q.device)  # partial over value blocks
    dk = torch.empty_like(dq)
    dv = torch.empty(bh, t, value, dtype=torch.float32, device=q.device)
    dcum = torch.empty(blocks, bh, t, dtype=torch.float32, device=q.device)
    dig = torch.empty_like(dcum)
    wrap_triton(kern.chunk_grads)[(bh, chunks, blocks)](q, k, v, cum, ig, c, n, m, dc, dn, dnum, dden,
                                                        dq, dk, dv, dcum, dig, t, chunks, bh * t)
    return dq.sum(0).to(q.dtype), dk.sum(0).to(k.dtype), dv.to(v.dtype), dcum.sum(0), dig.sum(0)


@_mlstm_chunk_backward.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, cum: Tensor, ig: Tensor, c: Tensor, n: Tensor, m: Tensor, m_rows: Tensor,
      dnum: Tensor, dden: Tensor, chunk: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(cum), torch.empty_like(ig)


def _setup(ctx: Any, inputs: tuple, output: tuple) -> None:
    q, k, v, cum, ig, chunk = inputs
    h, c, n, m, m_rows, den = output
    ctx.chunk = chunk
    ctx.save_for_backward(q, k, v, cum, ig, c, n, m, m_rows, den, h)


def _backward(ctx: Any, dh: Tensor, *_unused: Tensor | None) -> tuple:
    q, k, v, cum, ig, c, n, m, m_rows, den, h = ctx.saved_tensors
    # h = num / B with B = max(|den|, e^{−m}) + ε: dnum = dh / B; dden = −(dh·h) / B · sign(den)
    # where |den| is the larger (the whole value row's sum, so here, not per value block)
    bound = lower_bound(m_rows)
    scale = torch.maximum(den.abs(), bound) + EPS
    dnum = (dh / scale[..., None]).contiguous()
    dden = (-(dh * h).sum(-1) / scale * den.sign() * (den.abs() > bound)).contiguous()
    grads = _mlstm_chunk_backward(q, k, v, cum, ig, c, n, m, m_rows, dnum, dden, ctx.chunk)
    return (*grads, None)


_mlstm_chunk.register_autograd(_backward, setup_context=_setup)


def triton_mlstm(q: Tensor, k: Tensor, v: Tensor, log_f: Tensor, i: Tensor, chunk: int = 64) -> Tensor:
    """`chunk.mlstm_scan`'s output from no memory (its forward's use: training, a prompt without
    state), forward and backward in Triton: q, k, v [B, H, T, D] (k scaled); log f and the input
    gate i [B, H, T]. Returns h [B, H, T, D] in fp32. The final memory is not returned: its
    gradient would not flow, so state-carrying calls keep the torch form."""
    b, _, t, _ = q.shape
    c = chunk_params(q.shape[-1], v.shape[-1], chunk)["C"]
    # log f summed from each chunk's start (padding: f = 1 and no input)
    cum = chunk_cumsum(chunk_rows(log_f.float(), c), c)
    ig = chunk_rows(i.float(), c, value=NEG)
    out, _, _, _, m_rows, den = _mlstm_chunk(chunk_rows(q, c), chunk_rows(k, c), chunk_rows(v, c), cum, ig, c)
    out = from_chunk_rows(out, b, t)
    if torch.is_grad_enabled() and (log_f.requires_grad or i.requires_grad):
        out = out + _stabilizer_term(out, log_f, i, *(from_chunk_rows(x, b, t) for x in (m_rows, den)))
    return out


def _stabilizer_term(h: Tensor, log_f: Tensor, i: Tensor, m: Tensor, den: Tensor) -> Tensor:
    """Zero, whose gradient is h's through the stabilizer m, which the kernels' backward holds
    constant. h = num / (max(|den|, e^{−m}) + ε) with num and den relative to e^m depends on m
    only through ε: ∂h/∂m = −h ε / B (B the denominator, either branch of the max), a relative
    0.3% of log f's gradient where |den| is small and m large (measured). m_t is the running max
    of the log-weights, max_{j ≤ t} (Σ_{j<s≤t} log f_s + i_j) = F_t + cummax(i − F)_t with F the
    cumulative sum of log f — autograd takes dm to the maximizing token's input gate and the
    forget gates since, as the reference's `maximum` does."""
    forget = log_f.float().cumsum(-1)
    m_t = forget + torch.cummax(i.float() - forget, dim=-1).values
    slope = (-h * EPS / (torch.maximum(den.abs(), lower_bound(m)) + EPS)[..., None]).detach()
    return (m_t - m_t.detach())[..., None] * slope
