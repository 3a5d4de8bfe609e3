"""The recurrent decode step as one Triton op, `archc::recurrent_step`, rendered per rule, key and
value width and state layout (a fake implementation included, so a compiled decode step traces it
as one op). Decoding only: it has no backward, and the modules call it under `torch.no_grad()`."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.library import triton_op, wrap_triton

from archc.backends.torch.kernels.recurrent_step.specialize import params
from archc.backends.triton.render import render


@triton_op("archc::recurrent_step", mutates_args=())
def recurrent_step(rule: str, q: Tensor, k: Tensor, v: Tensor, decay: Tensor, extra: Tensor, state: Tensor,
                   v_major: bool) -> tuple[Tensor, Tensor]:
    """q, k [B, H, K]; v [B, H, V]; decay: log a [B, H] (log w [B, H, K] for "wkv"); extra: β [B, H]
    ("delta"), the bonus u [H, K] ("wkv"), unused ("decay"); state [B, H, K, V] ([B, H, V, K] with
    `v_major`). Returns (y [B, H, V], the new state), fp32."""
    p = params(rule, q.shape[-1], v.shape[-1], v_major)
    kernel = render("recurrent_step", **p).module
    y = torch.empty(v.shape, dtype=torch.float32, device=v.device)
    new = torch.empty(state.shape, dtype=torch.float32, device=state.device)
    wrap_triton(kernel.recurrent_step)[(q.shape[0] * q.shape[1], -(-p["V"] // p["BV"]))](
        q.contiguous(), k.contiguous(), v.contiguous(), decay.contiguous(), extra.contiguous(), state.contiguous(),
        new, y, q.shape[1])
    return y, new


@recurrent_step.register_fake
def _(rule: str, q: Tensor, k: Tensor, v: Tensor, decay: Tensor, extra: Tensor, state: Tensor,
      v_major: bool) -> tuple[Tensor, Tensor]:
    return (torch.empty(v.shape, dtype=torch.float32, device=v.device),
            torch.empty(state.shape, dtype=torch.float32, device=state.device))


@triton_op("archc::mlstm_step", mutates_args=())
def mlstm_step_op(q: Tensor, k: Tensor, v: Tensor, log_f: Tensor, i: Tensor, c: Tensor, n: Tensor,
                  m: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The mLSTM rule: q, k [B, H, K]; v [B, H, V]; log f, i [B, H]; the memory C [B, H, K, V],
    n [B, H, K], m [B, H]. Returns (h [B, H, V], C, n, m), fp32."""
    p = params("mlstm", q.shape[-1], v.shape[-1])
    kernel = render("recurrent_step", **p).module
    y = torch.empty(v.shape, dtype=torch.float32, device=v.device)
    c_new, n_new, m_new = (torch.empty(t.shape, dtype=torch.float32, device=t.device) for t in (c, n, m))
    wrap_triton(kernel.recurrent_step)[(q.shape[0] * q.shape[1], -(-p["V"] // p["BV"]))](
        q.contiguous(), k.contiguous(), v.contiguous(), log_f.contiguous(), i.contiguous(), c.contiguous(), c_new, y,
        q.shape[1], n.contiguous(), m.contiguous(), n_new, m_new)
    return y, c_new, n_new, m_new


@mlstm_step_op.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, log_f: Tensor, i: Tensor, c: Tensor, n: Tensor,
      m: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return tuple(torch.empty(t.shape, dtype=torch.float32, device=t.device) for t in (v, c, n, m))  # type: ignore[return-value]
