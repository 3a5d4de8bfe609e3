"""xLSTM's two cells (Beck et al., 2024): sLSTM (scalar memory, exponential gating, head-wise
recurrent mixing) and mLSTM (matrix memory with a covariance update), laid out as the `xlstm`
package's `sLSTMLayer` and `mLSTMLayer` so that its weights map one to one (tests copy them).

mLSTM is linear in its memory, so its forward is chunked (`scan.mlstm_scan`, no loop over
tokens). sLSTM is not: its gates see the previous hidden state through the recurrent matrix R and
a nonlinearity, so no chunked algebra exists (the paper says so: "not parallelizable") and its
forward is a loop over the tokens — eager Python in training, a `while_loop` under `torch.export`
so the exported length stays dynamic. Both keep their exponential gates stabilized: states carry
the log-scale m of their largest weight, and no exponent ever exceeds 0.

Departures from `xlstm`: norm scales are stored as the scale itself (xlstm stores w and uses 1 + w);
the depth-dependent inits (sLSTM's forget-gate bias, mLSTM's down-projection) count the model's
xLSTM blocks (sLSTM and mLSTM nodes) where xlstm counts the blocks of its own stack — the same
thing in an xLSTM model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archc.backends.torch.context import Context
from archc.backends.torch.init import Init
from archc.backends.torch.kernels.common import NEG, wide
from archc.backends.torch.kernels.mlstm import MLSTM_CHUNK, mlstm_scan, mlstm_step
from archc.backends.torch.layers import causal_depthwise_conv, init_conv, mask_padding
from archc.backends.torch.loops import exported_time_loop, segmented_forward
from archc.backends.torch.module import OpModule, State
from archc.backends.torch.registry import implements

#: The key of `Init.layer_index` shared by both cells: the block's depth among the xLSTM blocks.
_XLSTM_DEPTH = "xlstm"


def _xlstm_blocks(init: Init) -> int:
    return init.op_counts.get("slstm", 0) + init.op_counts.get("mlstm", 0)


def small_init_std(d: int) -> float:
    """√(2 / 5d): Nguyen & Salazar's "small init", xlstm's default for its input maps."""
    return math.sqrt(2 / (5 * d))


class HeadwiseLinear(nn.Module):
    """A block-diagonal linear map (xlstm's `LinearHeadwiseExpand` without bias): the width is
    cut into `heads` blocks, each mapped by its own [out, in] matrix. Weight [heads, out, in]."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(heads, width // heads, width // heads))

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("...hi,hoi->...ho", x.unflatten(-1, (self.weight.shape[0], -1)), self.weight).flatten(-2)


class HeadNorm(nn.Module):
    """Layer norm of each head's features separately, one scale per feature and no bias (xlstm's
    `MultiHeadLayerNorm`, a GroupNorm with one group per head). Input [..., heads, head_dim]."""

    def __init__(self, width: int, heads: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.heads, self.eps = heads, eps

    def forward(self, x: Tensor) -> Tensor:
        y = F.layer_norm(wide(x), x.shape[-1:], eps=self.eps).flatten(-2)
        return (y * wide(self.weight)).to(x.dtype)


SLSTMState = tuple[Tensor, Tensor, Tensor, Tensor]


def slstm_cell(g: Tensor, R: Tensor, state: SLSTMState) -> SLSTMState:
    """One sLSTM step (Beck et al. 2024, eqs. 8–17, stabilized as eqs. 15–17). g [B, 4, H, D]:
    the input pre-activations of the gates i, f, z, o with their biases; R [H, D, 4, D] the
    head-wise recurrent weights; state (h, c, n, m) [B, H, D] each. Returns the new state.

        m_t = max(f̃_t + m_{t−1}, ĩ_t)  with f̃ = log σ(f),   i' = e^{ĩ−m_t},  f' = e^{f̃+m_{t−1}−m_t}
        c_t = f' c_{t−1} + i' tanh(z_t),   n_t = f' n_{t−1} + i',   h_t = σ(o_t) c_t / n_t"""
    h, c, n, m = state
    raw = g + torch.einsum("bhi,higj->bghj", h, R)
    i, f, z, o = raw.unbind(1)
    log_fm = m + F.logsigmoid(f)
    m_new = torch.maximum(i, log_fm)  # an empty memory has m = NEG: then m_new = ĩ
    ig, fg = (i - m_new).exp(), (log_fm - m_new).exp()
    c = fg * c + ig * torch.tanh(z)
    n = fg * n + ig
    return torch.sigmoid(o) * c / n, c, n, m_new


@torch.compiler.disable
def slstm_scan(g: Tensor, R: Tensor, state: SLSTMState) -> tuple[Tensor, SLSTMState]:
    """All hidden states of `slstm_cell` over g [B, T, 4, H, D]: (h [B, T, H, D], final state).

    A loop over the tokens (the recurrence is nonlinear); under `torch.export` a `while_loop`, so
    the trip count stays the symbolic T. Runs eagerly inside `torch.compile` (a graph break), as
    the scans do, rather than be unrolled over a specialized length."""
    g, R = wide(g), wide(R)
    state = tuple(wide(s) for s in state)  # type: ignore[assignment]
    if torch.compiler.is_exporting():
        return _slstm_while_loop(g, R, state)
    hs = []
    for gt in g.unbind(1):
        state = slstm_cell(gt, R, state)
        hs.append(state[0])
    return torch.stack(hs, dim=1), state


def _slstm_while_loop(g: Tensor, R: Tensor, state: SLSTMState) -> tuple[Tensor, SLSTMState]:
    def one(gt: Tensor, carry: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        carry = slstm_cell(gt, R, carry)  # type: ignore[arg-type]
        return carry[0], carry

    out, final = exported_time_loop(one, g, state, g.new_zeros(g.shape[0], g.shape[1], *g.shape[3:]))
    return out, final  # type: ignore[return-value]


@implements("slstm")
class SLSTM(OpModule):
    """`slstm(x, heads=H, d_conv=k)`: xlstm's sLSTMLayer.

        x̃ = silu(causal_conv(x)) (x if k = 0);  i, f = W_i x̃, W_f x̃;  z, o = W_z x, W_o x
        h = sLSTM(i, f, z, o + biases; R);  out = HeadNorm(h)

    every W block-diagonal with H blocks (head-wise), R [H, D, 4, D] mixing memory only within a
    head. Init as xlstm: W small-init, R = 0, the forget-gate bias a power law over the head's
    features that depends on the block's depth (longer memories deeper), other biases 0.
    State (fp32): h, c, n, m [B, d] and the conv window [B, d, k]."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.d = d = in_types[0].width
        self.h, self.hd = p.heads, p.head_dim_for(d)
        self.conv1d = self.make_conv1d("conv1d") if p.d_conv else None
        self.igate, self.fgate, self.zgate, self.ogate = (HeadwiseLinear(d, p.heads) for _ in range(4))
        self.recurrent_kernel, self.bias = self.make_parameter("recurrent_kernel"), self.make_parameter("bias")
        self.group_norm = HeadNorm(self.declared("group_norm.weight").shape[0], p.heads)

    def init_weights(self, init: Init) -> None:
        depth, blocks = init.layer_index(_XLSTM_DEPTH), _xlstm_blocks(init)
        for gate in (self.igate, self.fgate, self.zgate, self.ogate):
            init.normal_(gate.weight, small_init_std(self.d))
        if self.conv1d is not None:
            init_conv(self.conv1d, init)
        ratio = depth / (blocks - 1) if blocks > 1 else 0.0
        power = (torch.arange(self.hd) / max(self.hd - 1, 1)) ** (0.3 + 1.3 * ratio)
        with torch.no_grad():
            self.recurrent_kernel.zero_()
            self.bias.zero_()
            self.bias[:, 1] = 5.0 - 12.0 * power  # xlstm's "powerlaw_blockdependent"
            self.group_norm.weight.fill_(1.0)

    def _gates(self, x: Tensor, ctx: Context | None, conv_prev: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The gates' input pre-activations with biases [B, T, 4, H, D], and the new conv window."""
        x = mask_padding(x, ctx)
        xc, conv_state = x, None
        if self.conv1d is not None:
            xc, conv_state = causal_depthwise_conv(x.transpose(1, 2), self.conv1d, conv_prev)
            xc = F.silu(xc.transpose(1, 2))
        g = torch.stack((self.igate(xc), self.fgate(xc), self.zgate(x), self.ogate(x)), dim=2)
        return g.unflatten(-1, (self.h, self.hd)) + self.bias.transpose(0, 1), conv_state

    def _run(self, x: Tensor, ctx: Context | None, state: SLSTMState, conv_prev: Tensor | None):
        g, conv_state = self._gates(x, ctx, conv_prev)
        kernel = self.triton_kernels.get("slstm_step")
        if g.shape[1] == 1 and kernel is not None and not torch.is_grad_enabled():  # decoding: one launch
            state = kernel(g[:, 0], self.recurrent_kernel, tuple(wide(s) for s in state))
            h = state[0][:, None]
        elif g.shape[1] == 1:  # one token (decoding): the cell itself, which a compiled step traces
            state = slstm_cell(wide(g[:, 0]), wide(self.recurrent_kernel), tuple(wide(s) for s in state))
            h = state[0][:, None]
        else:
            h, state = slstm_scan(g, self.recurrent_kernel, state)
        return self.group_norm(h.to(x.dtype)), state, conv_state

    def _empty(self, batch: int, device: torch.device, dtype: torch.dtype = torch.float32) -> SLSTMState:
        zeros = torch.zeros(batch, self.h, self.hd, device=device, dtype=dtype)
        return zeros, zeros, zeros, torch.full_like(zeros, NEG)

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        return self._run(x, ctx, self._empty(x.shape[0], x.device, wide(x).dtype), None)[0]


    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        cell = tuple(s.unflatten(1, (self.h, self.hd)) for s in state[:4])
        y, cell, conv = self._run(x, ctx, cell, state[4] if self.conv1d is not None else None)  # type: ignore[arg-type]
        new = tuple(s.flatten(1) for s in cell)
        return y, new + ((conv.float(),) if conv is not None else ())


@implements("mlstm")
class MLSTM(OpModule):
    """`mlstm(x, heads=H, expand, d_conv=k, qkv_block)`: xlstm's mLSTMLayer (E = expand·d).

        x_m, z = up_proj(x);  x̃ = silu(causal_conv(x_m))
        q, k = W_q x̃, W_k x̃;  v = W_v x_m   (block-diagonal, blocks of qkv_block)
        ĩ, f̃ = Linear(3E → H)([q, k, v]) each;  h = mLSTM(q, k/√D, v, ĩ, log σ(f̃))  (per head)
        out = down_proj((HeadNorm(h) + skip ⊙ x̃) ⊙ silu(z))

    Init as xlstm: up and q/k/v small-init, down-proj N(0, 2/(blocks·√d)), input-gate bias
    N(0, 0.1) and forget-gate bias linspace(3, 6) with zero gate weights, skip 1. State (fp32):
    C [B, H, D, D], n [B, H, D], m [B, H] (the memory, scaled by e^−m) and the conv window."""


    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.d = d = in_types[0].width
        self.e = e = p.inner(d)
        self.h, self.hd = p.heads, p.head_dim_for(d)
        self.proj_up = self.make_linear("proj_up")
        self.q_proj, self.k_proj, self.v_proj = (HeadwiseLinear(e, e // p.qkv_block) for _ in range(3))
        self.conv1d = self.make_conv1d("conv1d")
        self.igate, self.fgate = self.make_linear("igate"), self.make_linear("fgate")
        self.outnorm = HeadNorm(self.declared("outnorm.weight").shape[0], p.heads)
        self.learnable_skip = self.make_parameter("learnable_skip")
        self.proj_down = self.make_linear("proj_down")

    def init_weights(self, init: Init) -> None:
        init.layer_index(_XLSTM_DEPTH)
        for w in (self.proj_up.weight, self.q_proj.weight, self.k_proj.weight, self.v_proj.weight):
            init.normal_(w, small_init_std(self.d))
        init.normal_(self.proj_down.weight, 2 / max(_xlstm_blocks(init), 1) / math.sqrt(self.d))
        init_conv(self.conv1d, init)
        init.normal_(self.igate.bias, 0.1)
        with torch.no_grad():
            self.igate.weight.zero_()
            self.fgate.weight.zero_()
            self.fgate.bias.copy_(torch.linspace(3.0, 6.0, self.h))
            self.outnorm.weight.fill_(1.0)
            self.learnable_skip.fill_(1.0)

    def _inner(self, x: Tensor, ctx: Context | None, conv_prev: Tensor | None):
        """(q, k, v [B, H, T, D] with k scaled, log f, ĩ [B, H, T], x̃, z [B, T, E], conv window)."""
        xm, z = self.proj_up(mask_padding(x, ctx)).chunk(2, dim=-1)
        xc, conv_state = causal_depthwise_conv(xm.transpose(1, 2), self.conv1d, conv_prev)
        xc = mask_padding(F.silu(xc.transpose(1, 2)), ctx)
        q, k, v = self.q_proj(xc), self.k_proj(xc), self.v_proj(xm)
        qkv = torch.cat((q, k, v), dim=-1)
        i, log_f = self.igate(qkv), F.logsigmoid(wide(self.fgate(qkv)))
        q, k, v = (t.unflatten(-1, (self.h, self.hd)).transpose(1, 2) for t in (q, k, v))
        return q, k / math.sqrt(self.hd), v, log_f.transpose(1, 2), i.transpose(1, 2), xc, z, conv_state

    def _out(self, h: Tensor, xc: Tensor, z: Tensor) -> Tensor:
        h = self.outnorm(h.transpose(1, 2).to(xc.dtype))
        return self.proj_down((h + self.learnable_skip * xc) * F.silu(z))

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        if (y := segmented_forward(self, x, ctx)) is not None:
            return y
        q, k, v, log_f, i, xc, z, _ = self._inner(x, ctx, None)
        kernel = self.triton_kernels.get("mlstm_chunk")
        if kernel is not None:
            return self._out(kernel(q, k, v, log_f, i, MLSTM_CHUNK), xc, z)
        return self._out(mlstm_scan(q, k, v, log_f, i)[0], xc, z)


    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        q, k, v, log_f, i, xc, z, conv = self._inner(x, ctx, state[3])
        memory = (state[0], state[1], state[2])
        kernel = self.triton_kernels.get("recurrent_step")
        if x.shape[1] == 1 and kernel is not None and not torch.is_grad_enabled():  # decoding: one launch
            h, memory = kernel(q[:, :, 0], k[:, :, 0], v[:, :, 0], log_f[:, :, 0], i[:, :, 0], memory)
            h = h[:, :, None]
        elif x.shape[1] == 1:  # one token: the recurrence itself
            h, memory = mlstm_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], log_f[:, :, 0], i[:, :, 0], memory)
            h = h[:, :, None]
        else:
            h, memory = mlstm_scan(q, k, v, log_f, i, memory)
        return self._out(h, xc, z), (*memory, wide(conv))
