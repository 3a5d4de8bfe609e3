"""Sparse and low-rank attention for long encoders: Longformer (Beltagy et al., 2020), BigBird
(Zaheer et al., 2020) and Linformer (Wang et al., 2020). All three are bidirectional.

None of them builds a T×T matrix: Longformer runs its band blockwise (`local_attention`) with the
global tokens as extra keys of every block; BigBird gathers, for each query block, the key blocks
of its layout (window, global, random) and attends them in one batched SDPA call; Linformer
attends k projected keys. The global rows (Longformer's global tokens, BigBird's global blocks)
attend the whole sequence: G·T scores, linear in T. Blocks are tensor axes throughout, so exported
programs keep the length dynamic.
"""

from __future__ import annotations

import math
import zlib

import torch
from torch import Tensor

from archc.backends.torch.blocks import from_blocks, num_blocks, to_blocks
from archc.backends.torch.context import Context
from archc.backends.torch.init import Init
from archc.backends.torch.layers import blockwise_sdpa, sdpa
from archc.backends.torch.ops.attention import AttentionCore, local_attention
from archc.backends.torch.registry import implements


def _key_valid(ctx: Context, b: int, t: int, device: torch.device) -> Tensor:
    return ctx.attention_mask if ctx.attention_mask is not None else torch.ones(b, t, dtype=torch.bool, device=device)


def _scatter_rows(local: Tensor, rows: Tensor, row_pos: Tensor, row_ok: Tensor) -> Tensor:
    """Replace positions `row_pos` [G] (where `row_ok`) of local [B, H, T, hd] by rows [B, H, G, hd],
    as a select (no index_put): positions out of range are simply not selected."""
    t = local.shape[2]
    hit = (torch.arange(t, device=local.device)[:, None] == row_pos[None, :]) & row_ok[None, :]  # [T, G]
    picked = hit.to(rows.dtype) @ rows  # [B, H, T, hd]: the row for each hit position
    return torch.where(hit.any(-1)[:, None], picked, local)


@implements("longformer_attention")
class LongformerAttention(AttentionCore):
    """`longformer_attention(x, heads, window, global_tokens=[0], dilation=1)`, as transformers'
    `LongformerSelfAttention`: every token attends the window/2 keys on each side (every
    `dilation`-th one), plus the global tokens, in one softmax (a global token inside the band is
    counted once); global tokens attend every token through their own projections `q_global`,
    `k_global`, `v_global`. Padded keys (`attention_mask`) are excluded everywhere."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.q_global, self.k_global, self.v_global = (self.make_linear(f"{n}_global") for n in "qkv")
        self.reach = p.window // 2 * p.dilation
        self.dilation = p.dilation
        self.global_tokens = tuple(sorted(set(p.global_tokens)))

    def _heads(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        assert ctx is not None
        b, t, _ = x.shape
        valid = _key_valid(ctx, b, t, x.device)
        gpos = torch.tensor(self.global_tokens, dtype=torch.long, device=x.device)
        g_ok = gpos < t  # global positions past this sequence's end do not exist
        g_idx = gpos.clamp(max=t - 1)
        is_global = (torch.arange(t, device=x.device)[:, None] == gpos[None, :]).any(-1)  # [T]
        g_valid = g_ok[None, :] & valid.index_select(1, g_idx)  # [B, G]
        q, k, v = self.qkv(x, x, None)
        drop = self.dropout if self.training else 0.0
        # every token: its band (global tokens removed from it) + the global tokens' keys
        extra = (k.index_select(2, g_idx), v.index_select(2, g_idx), g_valid)
        y = local_attention(q, k, v, self.reach, self.reach, self.dilation, valid & ~is_global[None, :], drop, extra)
        # global tokens: attend every (unpadded) token with the global projections
        xg = x.index_select(1, g_idx)
        qg, kg, vg = self._heads(self.q_global(xg)), self._heads(self.k_global(x)), self._heads(self.v_global(x))
        yg = sdpa(qg, kg, vg, attn_mask=valid[:, None, None, :], dropout_p=drop)
        return self.out(_scatter_rows(y, yg, gpos, g_ok))


def bigbird_layout(n_real: Tensor, n: int, window: int, globals_: int, random: int, seed: int,
                   device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """The key blocks of each query block: (index [n, K] long, valid [n, K] bool).

    For query block i of the `n_real` real blocks (n ≥ n_real counts the padding blocks), the K =
    window + globals + random entries are the window blocks i − window//2 … i + window//2, the global
    blocks (the first ⌈globals/2⌉ and the last ⌊globals/2⌋ real blocks, ITC layout) and `random`
    blocks drawn from a fixed hash of (seed, i, j) among the real blocks outside the window. An
    entry is invalid when it is out of range or repeats an earlier entry (a random block landing on
    a global one), so no key is counted twice. The global blocks' own rows attend everything;
    the caller computes them densely (`BigBirdAttention.global_rows`).
    """
    i = torch.arange(n, device=device)
    first, last = (globals_ + 1) // 2, globals_ // 2
    half = window // 2
    win = i[:, None] + torch.arange(-half, half + 1, device=device)[None, :]
    win_ok = (win >= 0) & (win < n_real)
    glob = torch.cat((torch.arange(first, device=device), n_real - 1 - torch.arange(last, device=device)))
    glob = glob[None, :].expand(n, -1)
    glob_ok = (glob >= 0) & (glob < n_real)
    # random: the s-th block after the window, cyclically, for a hashed s in [0, n_real − window)
    outside = (n_real - window).clamp(min=1)
    j = torch.arange(random, device=device)
    h = (i[:, None] * 1_000_003 + j[None, :] * 7_919 + seed) * 2_654_435_761 % (2**31 - 1)
    rnd = (i[:, None] + half + 1 + h % outside) % n_real.clamp(min=1)
    rnd_ok = (n_real - window > 0).expand(n, random)
    idx = torch.cat((win, glob, rnd), dim=1)
    ok = torch.cat((win_ok, glob_ok, rnd_ok), dim=1)
    k = idx.shape[1]
    earlier = torch.ones(k, k, dtype=torch.bool, device=device).tril(-1)  # [a, c]: c before a
    dup = ((idx[:, :, None] == idx[:, None, :]) & ok[:, None, :] & earlier[None]).any(-1)
    return idx.clamp(0, n - 1), ok & ~dup


@implements("bigbird_attention")
class BigBirdAttention(AttentionCore):
    """`bigbird_attention(x, heads, block, window_blocks, global_blocks, random_blocks)`: block-sparse
    attention with the layout of `bigbird_layout` (BigBird-ITC). Each query block gathers its
    K = window + global + random key blocks ([B, H, n, K·block, hd]) for one SDPA call; global
    blocks attend every token. The random blocks are fixed per layer (seeded from the node id), so
    the forward is deterministic and equal in training and inference."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.block = p.block
        self.window_blocks, self.global_blocks, self.random_blocks = p.window_blocks, p.global_blocks, p.random_blocks

    @property
    def seed(self) -> int:
        return zlib.crc32(self.node_id.encode()) % 100_003

    def layout(self, t: int, device: torch.device) -> tuple[Tensor, Tensor]:
        n = num_blocks(t, self.block)
        n_real = (torch.arange(n, device=device) * self.block < t).sum()
        return bigbird_layout(n_real, n, self.window_blocks, self.global_blocks, self.random_blocks, self.seed, device)

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        assert ctx is not None
        bsz, t, _ = x.shape
        bs = self.block
        valid = _key_valid(ctx, bsz, t, x.device)
        q, k, v = self.qkv(x, x, None)
        idx, ok = self.layout(t, x.device)
        qb, kb, vb = (to_blocks(z, 2, bs) for z in (q, k, v))  # [B, H, n, bs, hd]
        n, kk = idx.shape
        vblk = to_blocks(valid, 1, bs, value=False)  # [B, n, bs]
        flat = idx.reshape(-1)
        keys = kb.index_select(2, flat).unflatten(2, (n, kk)).flatten(3, 4)  # [B, H, n, K·bs, hd]
        values = vb.index_select(2, flat).unflatten(2, (n, kk)).flatten(3, 4)
        key_ok = vblk.index_select(1, flat).unflatten(1, (n, kk)) & ok[None, :, :, None]  # [B, n, K, bs]
        mask = key_ok.flatten(2, 3)[:, None, :, None, :]  # [B, 1, n, 1, K·bs]
        mask = mask | ~mask.any(-1, keepdim=True)  # padding-only blocks: finite, discarded
        drop = self.dropout if self.training else 0.0
        y = from_blocks(blockwise_sdpa(qb, keys, values, mask, drop), 2, t)
        # global blocks' rows attend the whole sequence
        gpos, g_ok = self.global_rows(t, x.device)
        yg = sdpa(q.index_select(2, gpos.clamp(0, t - 1)), k, v,
                                            attn_mask=valid[:, None, None, :], dropout_p=drop)
        return self.out(_scatter_rows(y, yg, gpos, g_ok))

    def global_rows(self, t: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Positions of the global blocks' rows [G·block] and which exist: the first ⌈g/2⌉ blocks
        and the last ⌊g/2⌋ real blocks (a last block overlapping a first one is counted once)."""
        bs, g = self.block, self.global_blocks
        first, last = (g + 1) // 2, g // 2
        n_real = (torch.arange(num_blocks(t, bs), device=device) * bs < t).sum()
        head = torch.arange(first * bs, device=device)
        tail = (n_real - last) * bs + torch.arange(last * bs, device=device)
        pos = torch.cat((head, tail))
        ok = (pos < t) & torch.cat((torch.ones_like(head, dtype=torch.bool), tail >= first * bs))
        return pos, ok


@implements("linformer_attention")
class LinformerAttention(AttentionCore):
    """`linformer_attention(x, heads, k, max_len)`: keys and values projected along the sequence,
    K' = Eᵀ K and V' = Fᵀ V with E, F [max_len, k] (`e_proj`, `f_proj`, shared by the heads, the
    paper's "headwise sharing"); a sequence of T ≤ max_len tokens uses their first T rows. Padded
    tokens are zeroed before the projection. Init: uniform(±1/√k), as the reference code."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.max_len, self.k = p.max_len, p.k
        self.e_proj, self.f_proj = self.make_parameter("e_proj"), self.make_parameter("f_proj")

    def init_weights(self, init: Init) -> None:
        super().init_weights(init)
        bound = 1 / math.sqrt(self.k)
        init.uniform_(self.e_proj, -bound, bound)
        init.uniform_(self.f_proj, -bound, bound)

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        assert ctx is not None
        t = x.shape[1]
        torch._check(t <= self.max_len, lambda: f"linformer_attention takes at most max_len={self.max_len} tokens")
        q, k, v = self.qkv(x, x, None)
        if ctx.attention_mask is not None:
            keep = ctx.attention_mask[:, None, :, None].to(k.dtype)
            k, v = k * keep, v * keep
        e, f = self.e_proj[:t].to(k.dtype), self.f_proj[:t].to(v.dtype)
        kp = torch.einsum("bhtd,tk->bhkd", k, e)
        vp = torch.einsum("bhtd,tk->bhkd", v, f)
        drop = self.dropout if self.training else 0.0
        return self.out(sdpa(q, kp, vp, dropout_p=drop))
