"""Multi-head latent attention (DeepSeek-V2/V3), laid out as transformers' `DeepseekV3Attention` so
that checkpoints map one to one:

    q = q_b_proj(RMSNorm(q_a_proj(x)))  (or q_proj(x))  → per head [q^C | q^R]
    [c | k^R] = kv_a_proj_with_mqa(x);  c ← kv_a_layernorm(c)
    q^R, k^R rotated (DeepSeek's interleaved pairs, or rotate_half pairs)
    forward: keys and values expanded from c by kv_b_proj, one causal SDPA (`kernels/mla/chunk.py`)
    step: c and k^R written to the `kv_latent` / `key_rope` caches, attention with W_UK absorbed
          into the queries and W_UV after the sum (`kernels/mla/step.py`)
    out = o_proj(attention)

with the softmax scale 1/√(d_C + d_R). Init: N(0, 0.02) (o_proj the residual std), norms 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.context import Context
from archc.backends.torch.kernels.mla import absorbed_mla, expanded_mla
from archc.backends.torch.kernels.rotary.naive import apply_rope
from archc.backends.torch.module import OpModule, State
from archc.backends.torch.ops.norms import ScaledRMSNorm
from archc.backends.torch.ops.positions import rope_cos_sin
from archc.backends.torch.registry import implements


def rotate_interleaved(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """DeepSeek's rotary layout: pairs (x₀, x₁), (x₂, x₃), … each rotated by one frequency, written
    out de-interleaved ([evens | odds]), as transformers' `apply_rotary_pos_emb_interleave` (the
    same dot products as rotating in place, since queries and keys are permuted alike)."""
    half = cos.shape[-1] // 2
    cos, sin = cos[..., :half], sin[..., :half]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), -1)


@implements("mla")
class MLA(OpModule):
    """`mla(x, heads, kv_lora_rank, q_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim,
    rope_theta, rope_interleave, bias, norm_eps)`; see the module docstring."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.d_c, self.d_r, self.d_v, self.r = p.qk_nope_head_dim, p.qk_rope_head_dim, p.v_head_dim, p.kv_lora_rank
        self.scale = p.qk_head_dim ** -0.5
        if p.q_lora_rank is None:
            self.q_proj = self.make_linear("q_proj")
        else:
            self.q_a_proj, self.q_b_proj = self.make_linear("q_a_proj"), self.make_linear("q_b_proj")
            self.q_a_layernorm = ScaledRMSNorm(self.make_parameter("q_a_layernorm.weight"), p.norm_eps)
        self.kv_a_proj_with_mqa = self.make_linear("kv_a_proj_with_mqa")
        self.kv_a_layernorm = ScaledRMSNorm(self.make_parameter("kv_a_layernorm.weight"), p.norm_eps)
        self.kv_b_proj, self.o_proj = self.make_linear("kv_b_proj"), self.make_linear("o_proj")

    @property
    def heads(self) -> int:
        """From kv_b_proj's rows, not the spec: a tensor-parallel rank holds a share of the heads."""
        return self.kv_b_proj.weight.shape[0] // (self.d_c + self.d_v)

    def _rotate(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        return rotate_interleaved(x, cos, sin) if self.params.rope_interleave else apply_rope(x, cos, sin)

    def _project(self, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(q^C [B, H, T, d_C], rotated q^R [B, H, T, d_R], latent c [B, T, r], rotated k^R [B, T, d_R])."""
        b, t, _ = x.shape
        q = self.q_proj(x) if hasattr(self, "q_proj") else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(b, t, -1, self.d_c + self.d_r).transpose(1, 2)
        latent, k_rope = self.kv_a_proj_with_mqa(x).split((self.r, self.d_r), -1)
        # the RoPE tables per call: the module holds no buffers (the builder materializes declared weights only)
        inv_freq = 1.0 / self.params.rope_theta ** (torch.arange(0, self.d_r, 2, device=x.device).float() / self.d_r)
        cos, sin = rope_cos_sin(positions, inv_freq, x.dtype)
        return (q[..., : self.d_c], self._rotate(q[..., self.d_c:], cos, sin), self.kv_a_layernorm(latent),
                self._rotate(k_rope[:, None], cos, sin)[:, 0])

    def _out(self, y: Tensor) -> Tensor:
        b, h, t, dv = y.shape
        return self.o_proj(y.transpose(1, 2).reshape(b, t, h * dv))

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        assert ctx is not None
        q_nope, q_rope, latent, k_rope = self._project(x, ctx.positions)
        mask = None
        if ctx.attention_mask is not None:
            t = x.shape[1]
            causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
            mask = causal[None, None] & ctx.attention_mask[:, None, None, :]
        return self._out(expanded_mla(q_nope, q_rope, latent, k_rope, self.kv_b_proj.weight, self.d_c, self.scale,
                                      mask))

    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        pos = ctx.positions
        q_nope, q_rope, latent, k_rope = self._project(x, pos)
        latent_cache = state[0].index_copy(1, pos, latent.to(state[0].dtype))
        rope_cache = state[1].index_copy(1, pos, k_rope.to(state[1].dtype))
        k_pos = torch.arange(latent_cache.shape[1], device=x.device)
        ok = (pos[:, None] >= k_pos[None, :])[None]                     # [1, T, C]
        if ctx.attention_mask is not None:  # in decoding: which absolute positions may be attended
            ok = ok & ctx.attention_mask.index_select(1, k_pos)[:, None, :]
        w = self.kv_b_proj.weight.view(self.heads, self.d_c + self.d_v, self.r)
        y = absorbed_mla(q_nope, q_rope, latent_cache.to(x.dtype), rope_cache.to(x.dtype), w[:, : self.d_c],
                         w[:, self.d_c:], self.scale, ok[:, None])
        return self._out(y), (latent_cache, rope_cache)
