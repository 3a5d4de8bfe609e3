"""Mamba's selective SSM block (Gu & Dao 2023), with `mamba_ssm`'s and transformers' `MambaMixer`
parameter names, so checkpoints map one to one. State: `conv` [B, E, d_conv] (the last d_conv
inputs of the convolution, as transformers' cache) and `ssm` [B, E, N], fp32."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from archc.backends.torch.context import Context
from archc.backends.torch.init import Init
from archc.backends.torch.kernels.selective_scan import selective_scan
from archc.backends.torch.layers import (
    causal_depthwise_conv,
    init_conv,
    init_dt_bias,
    init_fan_in,
    mask_padding,
)
from archc.backends.torch.loops import segmented_forward
from archc.backends.torch.module import OpModule, State
from archc.backends.torch.ops.norms import ScaledRMSNorm
from archc.backends.torch.registry import implements


@implements("mamba")
class Mamba(OpModule):
    """`mamba(x, d_state=N, expand, d_conv, dt_rank, conv_bias, bias)`:

        x, z = in_proj(x);  u = silu(conv1d(x));  Δ, B, C = x_proj(u) (Δ through dt_proj, softplus)
        y = selective_scan(u, Δ, A = −exp(A_log), B, C) + D·u;  out = out_proj(y · silu(z))

    FalconMamba and Jamba RMS-normalize Δ's low-rank input, B and C after x_proj (`norm_dt_bc`;
    Jamba's with learned scales). Init as `mamba_ssm`: A = −(1..N) per channel (S4D-real), D = 1, Δ's bias log-uniform in
    [0.001, 0.1], dt_proj.weight U(±R^−½), in_proj, x_proj and the conv PyTorch's default; out_proj keeps
    its role's scaled residual init (every op's residual output draws the same, GPT-2's)."""


    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        d = in_types[0].width
        self.e, self.n = p.inner(d), p.d_state
        self.r = p.dt_rank_for(d)
        self.in_proj, self.conv1d = self.make_linear("in_proj"), self.make_conv1d("conv1d")
        self.x_proj, self.dt_proj = self.make_linear("x_proj"), self.make_linear("dt_proj")
        self.A_log, self.D = self.make_parameter("A_log"), self.make_parameter("D")
        self.out_proj = self.make_linear("out_proj")
        self.norm_dt_bc = p.norm_dt_bc
        if p.norm_dt_bc and p.norm_dt_bc_weights:  # Jamba's learned scales of the Δ/B/C norms
            self.dt_layernorm, self.b_layernorm, self.c_layernorm = (
                ScaledRMSNorm(self.make_parameter(f"{n}_layernorm.weight"), p.norm_eps) for n in ("dt", "b", "c"))
        elif p.norm_dt_bc:  # FalconMamba's: without weights
            self.dt_layernorm = self.b_layernorm = self.c_layernorm = ScaledRMSNorm(None, p.norm_eps)

    def init_weights(self, init: Init) -> None:
        init.default(self)
        init_fan_in(self.in_proj, init)
        init_fan_in(self.x_proj, init)
        init_conv(self.conv1d, init)
        init.uniform_(self.dt_proj.weight, -self.r ** -0.5, self.r ** -0.5)
        init_dt_bias(self.dt_proj.bias, init)
        with torch.no_grad():
            self.A_log.copy_(torch.arange(1, self.n + 1, dtype=torch.float32).log().expand(self.e, -1))
            self.D.fill_(1.0)

    def _inner(self, x: Tensor, ctx: Context | None, conv_prev: Tensor | None
               ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The projections and the convolution: (u, z, Δ, B, C, new conv state), u/Δ/z [B, T, E]."""
        xs, z = self.in_proj(mask_padding(x, ctx)).chunk(2, dim=-1)
        u, conv_state = causal_depthwise_conv(xs.transpose(1, 2), self.conv1d, conv_prev)
        u = mask_padding(F.silu(u).transpose(1, 2), ctx)
        dt, b, c = self.x_proj(u).split((self.r, self.n, self.n), dim=-1)
        if self.norm_dt_bc:  # FalconMamba / Jamba: each RMS-normalized before Δ's projection and the scan
            dt, b, c = self.dt_layernorm(dt), self.b_layernorm(b), self.c_layernorm(c)
        return u, z, F.softplus(self.dt_proj(dt).float()), b, c, conv_state

    def _out(self, y: Tensor, u: Tensor, z: Tensor) -> Tensor:
        y = (y + u.float() * self.D.float()) * F.silu(z.float())
        return self.out_proj(y.to(u.dtype))

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        if (y := segmented_forward(self, x, ctx)) is not None:
            return y
        u, z, dt, b, c, _ = self._inner(x, ctx, None)
        if (kernel := self.triton_kernels.get("selective_scan")) is not None:  # forward and backward in Triton
            return self._out(kernel(u, dt, -self.A_log.float().exp(), b, c), u, z)
        y, _ = selective_scan(u, dt, -self.A_log.float().exp(), b, c)
        return self._out(y, u, z)


    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        u, z, dt, b, c, conv = self._inner(x, ctx, state[0])
        A = -self.A_log.float().exp()
        kernel = self.triton_kernels.get("selective_step")
        if x.shape[1] == 1 and kernel is not None and not torch.is_grad_enabled():  # decoding: one launch
            y, h = kernel(u[:, 0], dt[:, 0], z[:, 0], A, self.D, b[:, 0], c[:, 0], state[1])
            return self.out_proj(y[:, None].to(u.dtype)), (conv.float(), h)
        if x.shape[1] == 1:  # one token: the recurrence itself (Alg. 2 at one step)
            h = torch.addcmul((dt[:, 0] * u[:, 0].float())[..., None] * b[:, 0, None].float(),
                              (dt[:, 0, :, None] * A).exp(), state[1])
            y = (h @ c[:, 0, :, None].float()).transpose(1, 2)
        else:
            y, h = selective_scan(u, dt, A, b, c, state[1])
        return self._out(y, u, z), (conv.float(), h)
