"""Softmax attention: MHA / GQA / MQA, causal or bidirectional, sliding window, padding masks,
cross-attention, RoPE / ALiBi / T5 relative bias, with a preallocated KV cache for `step`.

The computation goes through `F.scaled_dot_product_attention` (fused kernels when the pattern is
plain causal or unmasked; GQA without copying keys via `enable_gqa`). Sliding windows over long
sequences use `local_attention`, which computes block by block without an L×L matrix; its blocks
are a tensor axis (not a Python loop), so exported programs keep a dynamic length.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from archc.backends.torch.blocks import from_blocks, to_blocks
from archc.backends.torch.context import Context
from archc.backends.torch.kernels.rotary.naive import apply_rope
from archc.backends.torch.layers import blockwise_sdpa, sdpa
from archc.backends.torch.module import OpModule, State
from archc.backends.torch.ops.norms import ScaledRMSNorm
from archc.backends.torch.ops.positions import (
    RelativeBias,
    alibi_bias,
    alibi_slopes,
    rope_attention_factor,
    rope_cos_sin,
    rope_inv_freq,
)
from archc.backends.torch.registry import implements

NEG_INF = float("-inf")


def expand_kv(x: Tensor, groups: int) -> Tensor:
    """[B, KV, T, hd] -> [B, KV·groups, T, hd]: each key/value head serves `groups` query heads."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def local_attention(q: Tensor, k: Tensor, v: Tensor, left: int, right: int, dilation: int = 1,
                    key_valid: Tensor | None = None, dropout: float = 0.0,
                    extra: tuple[Tensor, Tensor, Tensor] | None = None, scale: float | None = None,
                    softcap: float | None = None) -> Tensor:
    """Banded attention without an L×L matrix: query i attends keys j with −right ≤ i − j ≤ left
    and (i − j) divisible by `dilation`.

    The sequence is padded to a multiple of the block size b = max(left, right) and cut into
    blocks; each query block attends its own and (as needed) its previous and next key blocks, so
    memory is O(T·b) instead of O(T²). Blocks are a batch axis of one SDPA call: the trip count
    is not a Python loop, and `torch.export` keeps T symbolic. q, k, v: [B, H, T, hd] with the
    same number of heads; key_valid: [B, T] bool padding mask or None.

    `extra` = (keys [B, H, G, hd], values, valid [B|1, G] bool) are attended by every query in the
    same softmax as its band: Longformer's global tokens.
    """
    t = q.shape[2]
    b = max(left, right, 1)
    qb, kb, vb = (to_blocks(x, 2, b) for x in (q, k, v))  # [B, H, n, b, hd]
    n = qb.shape[2]
    if key_valid is None:
        key_valid = torch.ones(1, t, dtype=torch.bool, device=q.device)
    valid = to_blocks(key_valid, 1, b, value=False)  # [B|1, n, b]
    ks, vs, oks, offs = [kb], [vb], [valid], [torch.arange(b, device=q.device)]
    if left > 0:  # previous block: shift blocks by one along n, padding the first with nothing valid
        ks.insert(0, F.pad(kb, (0, 0, 0, 0, 1, 0))[:, :, :n])
        vs.insert(0, F.pad(vb, (0, 0, 0, 0, 1, 0))[:, :, :n])
        oks.insert(0, F.pad(valid, (0, 0, 1, 0), value=False)[:, :n])
        offs.insert(0, torch.arange(-b, 0, device=q.device))
    if right > 0:
        ks.append(F.pad(kb, (0, 0, 0, 0, 0, 1))[:, :, 1:])
        vs.append(F.pad(vb, (0, 0, 0, 0, 0, 1))[:, :, 1:])
        oks.append(F.pad(valid, (0, 0, 0, 1), value=False)[:, 1:])
        offs.append(torch.arange(b, 2 * b, device=q.device))
    kk, vv = torch.cat(ks, dim=3), torch.cat(vs, dim=3)  # [B, H, n, K, hd]
    key_ok = torch.cat(oks, dim=2)  # [B|1, n, K]
    delta = torch.arange(b, device=q.device)[:, None] - torch.cat(offs)[None, :]  # [b, K]: i − j
    band = (delta <= left) & (delta >= -right)
    if dilation > 1:
        band = band & (delta.remainder(dilation) == 0)
    mask = band[None, None] & key_ok[:, :, None, :]  # [B|1, n, b, K]
    if extra is not None:
        ek, ev, e_ok = extra
        g = ek.shape[2]
        kk = torch.cat((kk, ek[:, :, None].expand(-1, -1, n, -1, -1)), dim=3)
        vv = torch.cat((vv, ev[:, :, None].expand(-1, -1, n, -1, -1)), dim=3)
        e_mask = e_ok[:, None, None, :].expand(-1, n, b, g)
        mask = torch.cat((mask.expand(e_mask.shape[0], -1, -1, -1), e_mask), dim=3)
    # rows with no key at all (padding past the end) get every key: finite values, discarded later
    mask = mask | ~mask.any(-1, keepdim=True)
    out = blockwise_sdpa(qb, kk, vv, mask[:, None], dropout, scale, softcap)
    return from_blocks(out, 2, t)


class AttentionCore(OpModule):
    """Shared q/k/v/o projections and the position schemes of the softmax-attention family."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.heads = h = p.heads
        self.head_dim = hd = p.head_dim_for(in_types[0].width)
        self.kv_heads = getattr(p, "kv_heads", None) or p.heads
        if "qkv_proj.weight" in self.declared_weights:  # packed by `pack_qkv`: one matmul, split after
            self.qkv_proj = self.make_linear("qkv_proj")
            self.qkv_split = ((2 if getattr(p, "out_gate", False) else 1) * h * hd, self.kv_heads * hd,
                              self.kv_heads * hd)
        else:
            self.q_proj, self.k_proj, self.v_proj = (self.make_linear(f"{n}_proj") for n in "qkv")
        self.o_proj = self.make_linear("o_proj")
        if getattr(p, "qk_norm", False):  # Qwen3's per-head RMSNorm of q and k, before the rotation
            # each head's (one weight shared by the heads), or the projection's whole width (OLMo 2)
            self.q_norm = ScaledRMSNorm(self.make_parameter("q_norm.weight"), p.qk_norm_eps, p.qk_norm_unit_offset)
            self.k_norm = ScaledRMSNorm(self.make_parameter("k_norm.weight"), p.qk_norm_eps, p.qk_norm_unit_offset)
            self.qk_norm_width = p.qk_norm_width
        self.dropout = getattr(p, "dropout", 0.0)  # attention-probability dropout in training (ops that declare it)
        self.scale = getattr(p, "scale", None)
        self.softcap = getattr(p, "softcap", None)
        self.out_gate = getattr(p, "out_gate", False)
        pos = getattr(p, "pos", None)
        self.pos = pos["op"] if pos else None
        self.pos_params = pos["params"] if pos else {}
        self.rot_dim = int(hd * self.pos_params.get("fraction", 1.0)) if self.pos == "rope" else 0
        self.slopes = alibi_slopes(h) if self.pos == "alibi" else None
        self.relative_bias = (RelativeBias(self.pos_params["buckets"], self.pos_params["max_distance"], h,
                                           bidirectional=not getattr(p, "causal", False))
                              if self.pos == "relative_bias" else None)

    def qkv(self, x: Tensor, src: Tensor, positions: Tensor | None,
            memo: dict | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Projected q [B, H, T, hd] and k, v [B, KV, S, hd], rotated when the scheme is RoPE."""
        return self.project(x, src, positions, memo)[:3]

    def project(self, x: Tensor, src: Tensor, positions: Tensor | None,
                memo: dict | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """`qkv`, and the output gate's input [B, T, H·hd] with `out_gate` (else None)."""
        b, t, _ = x.shape
        s = src.shape[1]
        if hasattr(self, "qkv_proj"):  # self-attention only (`src` is `x`)
            q, k, v = self.qkv_proj(x).split(self.qkv_split, -1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(src), self.v_proj(src)
        gate = None
        # head counts from the projections' widths, not the spec: a tensor-parallel rank holds a
        # share of the heads (archc/backends/torch/distributed.py); static under tracing
        hd = self.head_dim
        if self.out_gate:  # each head's queries, then its gate (Qwen3-Next)
            q, gate = q.view(b, t, q.shape[-1] // (2 * hd), 2 * hd).chunk(2, dim=-1)
            q, gate = q.reshape(b, t, -1), gate.reshape(b, t, -1)
        if hasattr(self, "q_norm") and self.qk_norm_width:  # OLMo 2: over the projections' whole width
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(b, t, q.shape[-1] // hd, hd).transpose(1, 2)
        k = k.view(b, s, k.shape[-1] // hd, hd).transpose(1, 2)
        v = v.view(b, s, v.shape[-1] // hd, hd).transpose(1, 2)
        if hasattr(self, "q_norm") and not self.qk_norm_width:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rot_dim and positions is not None:
            key = ("rope", self.rot_dim, tuple(sorted(self.pos_params.items())), q.dtype)
            tables = memo.get(key) if memo is not None else None
            if tables is None:  # computed once per call and shared by every layer with this scheme
                tables = rope_cos_sin(positions, rope_inv_freq(self.pos_params, self.rot_dim, x.device), q.dtype,
                                      rope_attention_factor(self.pos_params))
                if memo is not None:
                    memo[key] = tables
            cos, sin = tables
            rope = self.triton_kernels.get("rotary", apply_rope)
            q, k = rope(q, cos, sin), rope(k, cos, sin)
        return q, k, v, gate

    def position_bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor | None:
        if self.slopes is not None:
            return alibi_bias(torch.tensor(self.slopes, device=q_pos.device), q_pos, k_pos)
        if self.relative_bias is not None:
            return self.relative_bias(q_pos, k_pos)
        return None

    def out(self, y: Tensor, gate: Tensor | None = None) -> Tensor:
        b, _, t, _ = y.shape
        y = y.transpose(1, 2).reshape(b, t, y.shape[1] * self.head_dim)
        return self.o_proj(y if gate is None else y * torch.sigmoid(gate))


@implements("attention", "attention_packed")
class Attention(AttentionCore):
    """`attention(x, heads, kv_heads, causal, window, pos, kv=memory)`.

    Masks: causal (key ≤ query), sliding window (causal: the last `window` keys, query included;
    bidirectional: |query − key| ≤ window/2), padding (`attention_mask`, keys only). State for
    `step`: `key`, `value` [B, kv_heads, C, head_dim], preallocated with C = max_len, or C = window
    as a ring buffer for sliding windows (slot = position mod C). Cross-attention (`kv=`) is
    stateless: it recomputes keys and values from the memory each step.
    """

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.cross = len(in_types) > 1
        self.causal = p.causal
        self.window = p.window
        self.positional_state = not self.window

    # -- masks ------------------------------------------------------------------------------

    def _allowed(self, q_pos: Tensor, k_pos: Tensor) -> Tensor | None:
        """[Tq, Tk] bool of the causal / window pattern, from absolute positions (None: all)."""
        delta = q_pos[:, None] - k_pos[None, :]
        ok = None
        if self.causal:
            ok = delta >= 0
            if self.window:
                ok = ok & (delta < self.window)
        elif self.window:
            ok = delta.abs() <= self.window // 2
        return ok

    def _sdpa(self, q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor, k_pos: Tensor,
              key_valid: Tensor | None, implicit_causal: bool) -> Tensor:
        drop = self.dropout if self.training else 0.0
        gqa = self.kv_heads != self.heads
        bias = self.position_bias(q_pos, k_pos)
        if bias is None and key_valid is None and (implicit_causal or not (self.causal or self.window)):
            return sdpa(q, k, v, is_causal=implicit_causal, dropout_p=drop, enable_gqa=gqa, scale=self.scale,
                        softcap=self.softcap)
        allowed = self._allowed(q_pos, k_pos)
        mask: Tensor | None = allowed
        if key_valid is not None:
            kv_ok = key_valid[:, None, None, :]
            mask = kv_ok if mask is None else mask[None, None] & kv_ok
        if bias is not None:
            bias = bias.to(q.dtype)
            mask = bias if mask is None else bias.masked_fill(~mask, NEG_INF)
        return sdpa(q, k, v, attn_mask=mask, dropout_p=drop, enable_gqa=gqa, scale=self.scale, softcap=self.softcap)

    # -- forms ------------------------------------------------------------------------------

    def forward(self, x: Tensor, kv: Tensor | None = None, ctx: Context | None = None) -> Tensor:
        assert ctx is not None
        if kv is not None:
            q, k, v, gate = self.project(x, kv, None)
            k_pos = torch.arange(kv.shape[1], device=x.device)
            return self.out(self._sdpa(q, k, v, ctx.positions, k_pos, None, False), gate)
        q, k, v, gate = self.project(x, x, ctx.positions, ctx.memo)
        # banded windows always go blockwise: a branch on the length would fix it in exported graphs
        if self.window and self.slopes is None and self.relative_bias is None:
            left, right = (self.window - 1, 0) if self.causal else (self.window // 2, self.window // 2)
            g = self.heads // self.kv_heads
            y = local_attention(q, expand_kv(k, g), expand_kv(v, g), left, right, 1, ctx.attention_mask,
                                self.dropout if self.training else 0.0, scale=self.scale, softcap=self.softcap)
            return self.out(y, gate)
        plain_causal = self.causal and not self.window
        return self.out(self._sdpa(q, k, v, ctx.positions, ctx.positions, ctx.attention_mask, plain_causal), gate)


    def step(self, x: Tensor, kv: Tensor | None = None, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        if kv is not None:
            cached = ctx.memo.get(("cross_kv", getattr(self, "node_id", None)))
            if cached is None:
                return self.forward(x, kv, ctx), state
            # an encoder–decoder's cross-attention cache (archc/backends/torch/seq2seq.py): keys and
            # values computed once from the memory, its padding masked
            k, v, valid = cached
            q, _, _, gate = self.project(x, x[:, :1], None)
            k_pos = torch.arange(k.shape[2], device=x.device)
            return self.out(self._sdpa(q, k, v, ctx.positions, k_pos, valid, False), gate), state
        pos = ctx.positions
        q, k, v, gate = self.project(x, x, pos, ctx.memo)
        k_cache, v_cache = state
        c = k_cache.shape[2]
        if not self.window:
            k_cache = k_cache.index_copy(2, pos, k)
            v_cache = v_cache.index_copy(2, pos, v)
            k_pos = torch.arange(c, device=x.device)
            keys, values = k_cache, v_cache
        else:
            # ring buffer: slot s holds the latest position p < start with p ≡ s (mod c)
            before = pos[0] - 1
            slots = torch.arange(c, device=x.device)
            slot_pos = before - torch.remainder(before - slots, c)
            keys, values = torch.cat((k_cache, k), dim=2), torch.cat((v_cache, v), dim=2)
            k_pos = torch.cat((slot_pos, pos))
            last = pos[-c:]
            k_cache = k_cache.index_copy(2, torch.remainder(last, c), k[:, :, -c:])
            v_cache = v_cache.index_copy(2, torch.remainder(last, c), v[:, :, -c:])
        valid = (k_pos >= 0)[None]  # [1, K]
        if ctx.attention_mask is not None:  # in decoding: which absolute positions may be attended
            valid = valid & ctx.attention_mask.index_select(1, k_pos.clamp(min=0))
        y = self._sdpa_step(q, keys, values, pos, k_pos, valid)
        return self.out(y, gate), (k_cache, v_cache)

    def _sdpa_step(self, q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor, k_pos: Tensor, valid: Tensor) -> Tensor:
        """valid: [B|1, K] keys that exist (and are not masked)."""
        delta = q_pos[:, None] - k_pos[None, :]
        ok = delta >= 0
        if self.window:
            ok = ok & (delta < self.window)
        ok = (ok[None] & valid[:, None, :])[:, None]  # [B|1, 1, Tq, K]
        bias = self.position_bias(q_pos, k_pos)
        mask: Tensor = ok if bias is None else torch.where(ok, bias.to(q.dtype), NEG_INF)
        return sdpa(q, k, v, attn_mask=mask, enable_gqa=self.kv_heads != self.heads, scale=self.scale,
                    softcap=self.softcap)


@implements("latent_attention")
class LatentAttention(OpModule):
    """`latent_attention(x, latents=N, d_latent, heads)`: Perceiver's cross-attention (Jaegle et al.,
    2021): a learned latent array `latents` [N, d_latent] (N(0, 0.02)) queries the input, so the
    output is [B, N, d_latent] whatever T is — the ops after it run on N latent positions. Queries
    are projected from the latents (`q_proj`, d_latent → heads·head_dim), keys and values from the
    input (`k_proj`, `v_proj`), `o_proj` back to d_latent. Padded input tokens are not attended."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        d = in_types[0].width
        dl = p.d_latent or d
        self.heads = p.heads
        self.head_dim = p.head_dim_for(dl)
        self.latents = self.make_parameter("latents")
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (self.make_linear(f"{n}_proj") for n in "qkvo")
        self.dropout = p.dropout

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        assert ctx is not None
        b, t, _ = x.shape
        n = self.latents.shape[0]
        q = self.q_proj(self.latents).view(1, n, self.heads, self.head_dim).transpose(1, 2).expand(b, -1, -1, -1)
        k = self.k_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        mask = ctx.attention_mask[:, None, None, :] if ctx.attention_mask is not None else None
        y = sdpa(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.o_proj(y.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))
