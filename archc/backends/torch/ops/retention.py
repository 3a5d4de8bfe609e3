"""RetNet's multi-scale retention (Sun et al., 2023, "Retentive Network"), laid out as torchscale's
`MultiScaleRetention` (q/k/v/g/out projections without biases).

Per head h with decay γ_h = 1 − 2^(−5−h):

    Q = (X W_Q) e^{inθ},  K = (X W_K) e^{imθ} / √d_k,  V = X W_V
    Retention(X) = (Q K^† ⊙ D) V,   D_nm = γ^(n−m) for n ≥ m, else 0
    MSR(X) = (swish(X W_G) ⊙ GroupNorm_h(Retention)) W_O

The rotation pairs features (2i, 2i+1) as one complex number (torchscale's `theta_shift`) with
θ_i = 10000^(−i/(d_k/2 − 1)), so q·k depends on n − m only. Three forms compute the same
thing: parallel (the formula above), chunkwise (`scan.chunked_decay_attention`, used by
`forward` — its chunk is the op's `chunk`) and recurrent (`step` of one token:
S_n = γ S_{n−1} + K_nᵀ V_n, o_n = Q_n S_n). torchscale also rescales D's rows and the scores for
fp16 range; GroupNorm cancels such per-token, per-head scales (up to its ε), so they are left out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from archc.backends.torch.context import Context
from archc.backends.torch.kernels.ssd import chunked_decay_attention
from archc.backends.torch.loops import segmented_forward
from archc.backends.torch.module import OpModule, State
from archc.backends.torch.registry import implements

#: GroupNorm ε (torchscale's `layernorm_eps`).
EPS = 1e-6


def retention_decays(heads: int | tuple[int, ...], device: torch.device | None = None) -> Tensor:
    """log γ_i for γ_i = 1 − 2^(−5−i), i = 0..heads−1 (the paper's per-head decays) or the given
    indices (a pruned model's heads keep theirs), in fp32. Computed where used rather than kept
    as buffers: a model cast to bf16 would round them."""
    i = torch.arange(heads, dtype=torch.float32, device=device) if isinstance(heads, int) else \
        torch.tensor(list(heads), dtype=torch.float32, device=device)
    return torch.log1p(-(2.0 ** (-5.0 - i)))


def xpos_angles(key_dim: int, device: torch.device | None = None) -> Tensor:
    """θ [key_dim/2]: 1/10000^(linspace(0, 1, key_dim/2)), torchscale's `RetNetRelPos`."""
    return 1.0 / 10000 ** torch.linspace(0, 1, key_dim // 2, device=device)


def rotate(x: Tensor, positions: Tensor, theta: Tensor) -> Tensor:
    """x [B, H, T, d_k] with each pair (2i, 2i+1) multiplied by e^{i·n·θ_i}, n = positions [T]."""
    angle = (positions.float()[:, None] * theta).repeat_interleave(2, dim=-1)
    x1, x2 = x[..., ::2], x[..., 1::2]
    rotated = torch.stack((-x2, x1), dim=-1).flatten(-2)
    return x * angle.cos().to(x.dtype) + rotated * angle.sin().to(x.dtype)


@implements("retention", "retention_packed")
class Retention(OpModule):
    """`retention(x, heads, value_factor, chunk)`. Weights `q_proj`, `k_proj` [d, d], `v_proj`,
    `g_proj` [vf·d, d], `out_proj` [d, vf·d] (`retention_packed`: the first four as one
    `qkvg_proj`, split after its matmul); the GroupNorm has no affine weights. State: `kv`
    [B, H, d/H, vf·d/H] in fp32."""


    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        d = in_types[0].width
        self.heads = p.heads
        self.dk, self.dv = p.head_dims_for(d)
        self.decays = tuple(p.decay_indices())
        if "qkvg_proj.weight" in self.declared_weights:  # packed by `pack_in_proj`: one matmul, split after
            self.qkvg_proj = self.make_linear("qkvg_proj")
            self.qkvg_split = (self.heads * self.dk,) * 2 + (self.heads * self.dv,) * 2
        else:
            self.q_proj, self.k_proj, self.v_proj, self.g_proj = (
                self.make_linear(n) for n in ("q_proj", "k_proj", "v_proj", "g_proj"))
        self.out_proj = self.make_linear("out_proj")

    def _qkvg(self, x: Tensor, ctx: Context) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Rotated q, scaled and rotated k [B, H, T, dk], v [B, H, T, dv], and the gate's
        pre-activation g [B, T, H·dv]."""
        b, t, _ = x.shape
        if hasattr(self, "qkvg_proj"):
            q, k, v, g = self.qkvg_proj(x).split(self.qkvg_split, -1)
        else:
            q, k, v, g = self.q_proj(x), self.k_proj(x), self.v_proj(x), self.g_proj(x)
        q = q.view(b, t, self.heads, self.dk).transpose(1, 2)
        k = k.view(b, t, self.heads, self.dk).transpose(1, 2) / math.sqrt(self.dk)
        v = v.view(b, t, self.heads, self.dv).transpose(1, 2)
        if ctx.attention_mask is not None:  # padded tokens add nothing to the state
            k = k * ctx.attention_mask[:, None, :, None].to(k.dtype)
        theta = xpos_angles(self.dk, x.device)
        return rotate(q, ctx.positions, theta), rotate(k, ctx.positions, theta), v, g

    def _out(self, y: Tensor, g: Tensor) -> Tensor:
        """y [B, H, T, dv] -> GroupNorm per head, swish gate, out_proj."""
        y = F.layer_norm(y.float(), (self.dv,), eps=EPS).transpose(1, 2).flatten(2)
        return self.out_proj(F.silu(g) * y.to(g.dtype))

    def _log_decay(self, x: Tensor) -> Tensor:
        """log γ per head and token [B, H, T]."""
        return retention_decays(self.decays, x.device)[None, :, None].expand(x.shape[0], self.heads, x.shape[1])

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        assert ctx is not None
        if (y := segmented_forward(self, x, ctx)) is not None:
            return y
        q, k, v, g = self._qkvg(x, ctx)
        kernel = self.triton_kernels.get("decay_chunk")
        if kernel is not None:
            return self._out(kernel(q, k, v, self._log_decay(x), self.params.chunk), g)
        y, _ = chunked_decay_attention(q, k, v, self._log_decay(x), chunk=self.params.chunk)
        return self._out(y, g)


    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        q, k, v, g = self._qkvg(x, ctx)
        kernel = self.triton_kernels.get("recurrent_step")
        if x.shape[1] == 1 and kernel is not None and not torch.is_grad_enabled():  # decoding: one launch
            log_a = retention_decays(self.decays, x.device)[None].expand(x.shape[0], -1)
            y, s = kernel(q[:, :, 0], k[:, :, 0], v[:, :, 0], log_a, state[0])
            y = y[:, :, None]
        elif x.shape[1] == 1:  # the recurrent form: S ← γ S + kᵀv, o = q S
            s = torch.addcmul(k.float().transpose(-1, -2) @ v.float(), retention_decays(self.decays, x.device).exp()[:, None, None], state[0])
            y = q.float() @ s
        else:
            y, s = chunked_decay_attention(q, k, v, self._log_decay(x), state[0],
                                           chunk=self.params.chunk)
        return self._out(y, g), (s,)
