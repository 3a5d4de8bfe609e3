"""Mamba-2 (SSD, Dao & Gu 2024), with transformers' `Mamba2Mixer` parameter names. State: `conv`
[B, E + 2GN, d_conv] and `ssm` [B, H, P, N], fp32."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archc.backends.torch.context import Context
from archc.backends.torch.init import Init
from archc.backends.torch.kernels.ssd import chunked_decay_attention
from archc.backends.torch.layers import (
    causal_depthwise_conv,
    init_conv,
    init_dt_bias,
    init_fan_in,
    mask_padding,
)
from archc.backends.torch.loops import segmented_forward
from archc.backends.torch.module import OpModule, State
from archc.backends.torch.registry import implements

#: The gated RMSNorm's ε (mamba_ssm's and transformers' default).
NORM_EPS = 1e-5


class GatedRMSNorm(nn.Module):
    """Mamba-2's output norm: RMSNorm(y · silu(z)) over groups of the features (one group per B/C
    group, so the layer stays correct under tensor parallelism), weight [E]."""

    def __init__(self, width: int, groups: int, eps: float = NORM_EPS) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.groups, self.eps = groups, eps

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        h = (y.float() * F.silu(z.float())).unflatten(-1, (self.groups, -1))
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.flatten(-2).to(z.dtype)


@implements("mamba2")
class Mamba2(OpModule):
    """`mamba2(x, d_state=N, expand, d_conv, head_dim=P, groups=G, chunk)`: in_proj gives
    z [E], xBC [E + 2GN] and Δ [H]; xBC through the causal conv and silu; per head h

        S_t = exp(Δ_t A_h) S_{t−1} + Δ_t x_t ⊗ B_t,    y_t = S_t C_t + D_h x_t

    (A_h = −exp(A_log_h) a scalar, B/C shared by the H/G heads of a group), computed by the
    chunked SSD algorithm with chunk length `chunk`; out = out_proj(GatedRMSNorm(y, z)). Init as
    `mamba_ssm`: A_h = −h (1..H), D = 1, Δ's bias log-uniform in [0.001, 0.1], in_proj PyTorch's
    default; out_proj its role's scaled residual init."""


    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        d = in_types[0].width
        self.e, self.n, self.g, self.p = p.inner(d), p.d_state, p.groups, p.head_dim
        self.h = p.heads_for(d)
        self.conv_dim = p.conv_width(d)
        self.in_proj, self.conv1d = self.make_linear("in_proj"), self.make_conv1d("conv1d")
        self.dt_bias, self.A_log, self.D = (self.make_parameter(n) for n in ("dt_bias", "A_log", "D"))
        self.norm = GatedRMSNorm(self.declared("norm.weight").shape[0], self.g)
        self.out_proj = self.make_linear("out_proj")

    def init_weights(self, init: Init) -> None:
        init.default(self)
        init_fan_in(self.in_proj, init)
        init_conv(self.conv1d, init)
        init_dt_bias(self.dt_bias, init)
        with torch.no_grad():
            self.A_log.copy_(torch.arange(1, self.h + 1, dtype=torch.float32).log())
            self.D.fill_(1.0)

    def _inner(self, x: Tensor, ctx: Context | None, conv_prev: Tensor | None):
        """(x [B, T, H, P], z [B, T, E], Δ [B, T, H], B/C [B, T, H, N], new conv state)."""
        z, xbc, dt = self.in_proj(mask_padding(x, ctx)).split((self.e, self.conv_dim, self.h), dim=-1)
        xbc, conv_state = causal_depthwise_conv(xbc.transpose(1, 2), self.conv1d, conv_prev)
        xbc = mask_padding(F.silu(xbc).transpose(1, 2), ctx)
        xs, b, c = xbc.split((self.e, self.g * self.n, self.g * self.n), dim=-1)
        heads_per_group = self.h // self.g
        b, c = (t.unflatten(-1, (self.g, self.n)).repeat_interleave(heads_per_group, dim=2) for t in (b, c))
        dt = F.softplus(dt.float() + self.dt_bias.float())
        return xs.unflatten(-1, (self.h, self.p)), z, dt, b, c, conv_state

    def _out(self, y: Tensor, xs: Tensor, z: Tensor) -> Tensor:
        y = y + xs.float() * self.D.float()[:, None]  # [B, T, H, P]
        return self.out_proj(self.norm(y.flatten(-2), z))

    def _scan(self, xs: Tensor, dt: Tensor, b: Tensor, c: Tensor, ssm: Tensor | None,
              need_state: bool = True) -> tuple[Tensor, Tensor | None]:
        """SSD over the sequence; ssm / the returned state [B, H, P, N] (None where not needed and
        the chunk kernel ran, which does not return it)."""
        A = -self.A_log.float().exp()
        v = (xs.float() * dt[..., None]).transpose(1, 2)  # [B, H, T, P]
        kernel = self.triton_kernels.get("decay_chunk")
        if kernel is not None and ssm is None and not need_state:
            y = kernel(c.transpose(1, 2), b.transpose(1, 2), v, (dt * A).transpose(1, 2), self.params.chunk)
            return y.transpose(1, 2), None
        y, s = chunked_decay_attention(c.transpose(1, 2), b.transpose(1, 2), v, (dt * A).transpose(1, 2),
                                       None if ssm is None else ssm.transpose(-1, -2), self.params.chunk)
        return y.transpose(1, 2), s.transpose(-1, -2)

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        if (y := segmented_forward(self, x, ctx)) is not None:
            return y
        xs, z, dt, b, c, _ = self._inner(x, ctx, None)
        y, _ = self._scan(xs, dt, b, c, None, need_state=False)
        return self._out(y, xs, z)


    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        xs, z, dt, b, c, conv = self._inner(x, ctx, state[0])
        kernel = self.triton_kernels.get("recurrent_step")
        if x.shape[1] == 1 and kernel is not None and not torch.is_grad_enabled():  # decoding: one launch
            A = -self.A_log.float().exp()
            dt0 = dt[:, 0]
            y, s = kernel(c[:, 0], b[:, 0], dt0[..., None] * xs[:, 0].float(), dt0 * A, state[1], v_major=True)
            y = y[:, None]
        elif x.shape[1] == 1:  # one token: S ← exp(ΔA) S + Δx ⊗ B, y = S C
            A = -self.A_log.float().exp()
            dt0 = dt[:, 0]  # [B, H]
            s = torch.addcmul((dt0[..., None] * xs[:, 0].float())[..., None] * b[:, 0, :, None, :].float(),
                              (dt0 * A).exp()[..., None, None], state[1])
            y = (s @ c[:, 0, :, :, None].float())[..., 0][:, None]
        else:
            y, s = self._scan(xs, dt, b, c, state[1])
        return self._out(y, xs, z), (conv.float(), s)
