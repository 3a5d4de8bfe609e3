"""Memory-augmented layers: the Compressive Transformer's attention over raw and compressed memories
(Rae et al., 2020) and the Recurrent Memory Transformer's memory tokens carried across segments
(Bulatov et al., 2022)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from archc.backends.torch.blocks import from_blocks, to_blocks
from archc.backends.torch.body import BodyOp
from archc.backends.torch.context import Context
from archc.backends.torch.init import Init
from archc.backends.torch.layers import sdpa
from archc.backends.torch.loops import exported_time_loop
from archc.backends.torch.module import OpModule, State
from archc.backends.torch.registry import implements
from archc.passes.facts import is_causal


def _floor_div(a: Tensor, b: int) -> Tensor:
    return torch.div(a, b, rounding_mode="floor")


@implements("compressive_memory")
class CompressiveMemory(OpModule):
    """`compressive_memory(x, heads, mem_len=M, cmem_len=S, ratio=c, reconstruction=λ)`.

    The Compressive Transformer's FIFO of memories, at token granularity. Token t attends, in one
    softmax,

    * raw keys at positions r_t ≤ s ≤ t, with r_t = c·⌊max(0, t − M)/c⌋: the token itself and the
      M to M + c − 1 tokens before it (the paper's memory, evicted c tokens at a time);
    * compressed slots j with J_t − S ≤ j < J_t, J_t = r_t / c: slot j = Conv1d(kernel = stride =
      c) of the inputs at positions jc … jc + c − 1 (the paper's best compression function), i.e.
      the last S groups of c tokens evicted from the raw window.

    So the paper's memory hierarchy is exact for each token (not only at segment boundaries), the
    forward over a long sequence equals token-by-token decoding, and both use O(M + S) keys per
    token. The forward is blockwise (query blocks of ≥ M + c − 1 tokens, each with its own and the
    previous key block plus the ≤ S + b/c slots it can see): no T×T matrix.

    Training the compression (paper §3.2): the attention-reconstruction loss λ·‖attn(q, raw) −
    attn(q, compressed)‖² over, per query, exactly the tokens it sees compressed, with the
    attention weights and the queries, keys and inputs held constant (stop-gradient), so only the
    compression learns from it; added to the auxiliary losses. Unlike the paper — whose memories
    come from earlier segments, cut from the graph — the task loss also reaches the compression
    here, since the whole sequence is one graph.

    Padding: a padded key is never attended; a compressed slot only if its c tokens are all real.
    Weights: q/k/v/o Linear(d, d) without bias (o: the scaled residual init), `compress` Conv1d
    weight N(0, 0.02), bias 0. No positional encoding (causal attention orders tokens itself).

    State for `step` (ring buffers, `compressive_buffers`): `key`, `value` [B, H, M + c, hd] of the
    raw window; `pending` [B, c, d], the inputs of the last c positions (the slot being filled);
    `compressed_key`, `compressed_value` [B, H, S + ⌊M/c⌋ + 3, hd] of the compressed slots.
    """


    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        d = in_types[0].width
        self.heads = p.heads
        self.head_dim = p.head_dim_for(d)
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (self.make_linear(f"{n}_proj") for n in "qkvo")
        self.compress = self.make_conv1d("compress", depthwise=False, stride=p.ratio)

    # -- pieces shared by both forms ---------------------------------------------------------

    def _split(self, y: Tensor) -> Tensor:
        """[B, T, d] -> [B, H, T, hd]."""
        b, t, _ = y.shape
        return y.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    def _compress(self, groups: Tensor) -> Tensor:
        """[B, n, c, d] groups of c inputs -> [B, n, d] slots: the strided conv, as one matmul."""
        return torch.einsum("bnci,oic->bno", groups, self.compress.weight) + self.compress.bias

    def _raw_start(self, t: Tensor) -> Tensor:
        """r_t: the first position token t still sees uncompressed."""
        c = self.params.ratio
        return _floor_div((t - self.params.mem_len).clamp(min=0), c) * c

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        # rows with no key at all (padding past the end) get every key: finite values, discarded later
        mask = mask | ~mask.any(-1, keepdim=True)
        return sdpa(q, k, v, attn_mask=mask)

    def _out(self, y: Tensor) -> Tensor:
        b, _, t, _ = y.shape
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))

    # -- forward: blockwise over the whole sequence ------------------------------------------

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        assert ctx is not None
        p = self.params
        c, s_max = p.ratio, p.cmem_len
        bsz, t, _ = x.shape
        dev = x.device
        q, k, v = (self._split(f(x)) for f in (self.q_proj, self.k_proj, self.v_proj))
        key_valid = ctx.attention_mask if ctx.attention_mask is not None else torch.ones(1, t, dtype=torch.bool,
                                                                                             device=dev)
        # compressed slots of every complete (and the last incomplete) group of c inputs
        groups = to_blocks(x, 1, c)  # [B, n_s, c, d]
        n_s = groups.shape[1]
        slots = self._compress(groups)
        slot_ok = to_blocks(key_valid, 1, c, value=False).all(-1)  # [B|1, n_s]
        ck, cv = self._split(self.k_proj(slots)), self._split(self.v_proj(slots))

        # query blocks of b ≥ M + c − 1 tokens, b a multiple of c; raw keys from the previous and the
        # own block (r_t ≥ t − b). Masks are written per offset u in the block plus whether the block
        # starts before M: no division of a symbolic index (Inductor cannot simplify those).
        b = c * -(-(p.mem_len + c - 1) // c)
        qb, kb, vb = (to_blocks(y, 2, b) for y in (q, k, v))  # [B, H, n, b, hd]
        n = qb.shape[2]
        u = torch.arange(b, device=dev)
        shift = lambda y: F.pad(y, (0, 0, 0, 0, 1, 0))[:, :, :n]  # noqa: E731 — block i−1 beside block i
        raw_k, raw_v = torch.cat((shift(kb), kb), 3), torch.cat((shift(vb), vb), 3)
        valid_b = to_blocks(key_valid, 1, b, value=False)  # [B|1, n, b]
        raw_ok = torch.cat((F.pad(valid_b, (0, 0, 1, 0), value=False)[:, :n], valid_b), 2)  # [B|1, n, 2b]
        rel = torch.arange(2 * b, device=dev)[None] - b - u[:, None]  # [b, 2b]: s − t
        # t ≥ M: r_t − t = −M − ((t − M) mod c), and (t − M) mod c = (u − M) mod c as c divides b
        lo = torch.tensor([-p.mem_len - (i - p.mem_len) % c for i in range(b)], device=dev)
        early = (torch.arange(n, device=dev)[:, None] * b + u) < p.mem_len  # [n, b]: r_t = 0
        raw_mask = ((rel <= 0) & ((rel >= lo[:, None]) | early[..., None]))[None] & raw_ok[:, :, None, :]

        # the slots a block can see: S before the first query's J up to the last query's J, with
        # J_t = ⌊(t − M)/c⌋ = i·b/c + ⌊(u − M)/c⌋ for t ≥ M, else 0
        fl = torch.tensor([(i - p.mem_len) // c for i in range(b)], device=dev)
        j_t = torch.where(early, 0, torch.arange(n, device=dev)[:, None] * (b // c) + fl)  # [n, b]
        k_c = s_max + (b - 1) // c + 1
        j = (j_t[:, :1] - s_max) + torch.arange(k_c, device=dev)  # [n, Kc] slot ids
        idx = j.clamp(0, n_s - 1).flatten()
        vis = (j[:, None, :] >= j_t[..., None] - s_max) & (j[:, None, :] < j_t[..., None]) & (j >= 0)[:, None, :]
        slot_vis = vis[None] & slot_ok.index_select(1, idx).view(-1, n, 1, k_c)  # [B|1, n, b, Kc]
        gather = lambda y: y.index_select(2, idx).view(bsz, self.heads, n, k_c, self.head_dim)  # noqa: E731
        keys = torch.cat((gather(ck), raw_k), 3)
        values = torch.cat((gather(cv), raw_v), 3)
        mask = torch.cat((slot_vis, raw_mask), 3)  # both [B|1, …] from the same padding mask
        y = from_blocks(self._attend(qb, keys, values, mask[:, None]), 2, t)
        if self.training and p.reconstruction > 0:
            self._reconstruction_loss(qb, k, v, groups, idx, slot_vis, key_valid, valid_b, ctx)
        return self._out(y)

    def _reconstruction_loss(self, qb: Tensor, k: Tensor, v: Tensor, groups: Tensor, idx: Tensor,
                             slot_vis: Tensor, key_valid: Tensor, query_valid: Tensor, ctx: Context) -> None:
        """λ·mean ‖attn(q, the raw tokens of the visible slots) − attn(q, the slots)‖² (Rae et al.
        §3.2) over the real queries that see a slot, with everything but the compression held
        constant."""
        c = self.params.ratio
        bsz, h, n, _, hd = qb.shape
        k_c = slot_vis.shape[-1]
        qd = qb.detach()
        slots = self._compress(groups.detach())
        ck = self._split(F.linear(slots, self.k_proj.weight.detach()))
        cv = self._split(F.linear(slots, self.v_proj.weight.detach()))
        gather = lambda y: y.index_select(2, idx).view(bsz, h, n, k_c, hd)  # noqa: E731
        pred = self._attend(qd, gather(ck), gather(cv), slot_vis[:, None])
        # the same slots' c tokens each, uncompressed: [B, H, n, Kc·c, hd]
        raw = lambda y: to_blocks(y.detach(), 2, c).index_select(2, idx).view(bsz, h, n, k_c * c, hd)  # noqa: E731
        tok_ok = to_blocks(key_valid, 1, c, value=False).index_select(1, idx).view(-1, n, 1, k_c * c)
        raw_vis = slot_vis.repeat_interleave(c, dim=-1) & tok_ok
        with torch.no_grad():
            target = self._attend(qd, raw(k), raw(v), raw_vis[:, None])
        rows = slot_vis.any(-1) & query_valid  # [B|1, n, b]: real queries that see at least one slot
        err = (pred - target).pow(2).mean(dim=(1, 4))  # [B, n, b]
        w = rows.expand_as(err).to(err.dtype)
        ctx.aux_losses.append(self.params.reconstruction * (err * w).sum() / w.sum().clamp_min(1.0))

    # -- step: ring buffers ------------------------------------------------------------------


    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        p = self.params
        c, s_max = p.ratio, p.cmem_len
        k_ring, v_ring, pending, ck_ring, cv_ring = state
        r_len, n_ring = k_ring.shape[2], ck_ring.shape[2]
        bsz, t_new, _ = x.shape
        dev = x.device
        pos = ctx.positions
        start = pos[0]
        q, k, v = (self._split(f(x)) for f in (self.q_proj, self.k_proj, self.v_proj))

        # raw keys: ring slot s holds the latest position < start with position ≡ s (mod R)
        before = start - 1
        ring_pos = before - torch.remainder(before - torch.arange(r_len, device=dev), r_len)
        raw_pos = torch.cat((ring_pos, pos))

        # slots j0 … j0 + K − 1 touched by this call (the last may still be incomplete)
        j0 = _floor_div(start, c)
        n_new = (t_new + c - 2) // c + 1
        new_j = j0 + torch.arange(n_new, device=dev)
        tok = new_j[:, None] * c + torch.arange(c, device=dev)  # [K, c] positions
        src = torch.where(tok < start, torch.remainder(tok, c), (c + tok - start).clamp(max=c + t_new - 1))
        groups = torch.cat((pending, x), 1).index_select(1, src.flatten()).view(bsz, n_new, c, -1)
        slots = self._compress(groups)
        nk, nv = self._split(self.k_proj(slots)), self._split(self.v_proj(slots))
        top_old = _floor_div(start - 1, c)  # last slot id written before this call
        ring_j = top_old - torch.remainder(top_old - torch.arange(n_ring, device=dev), n_ring)
        slot_j = torch.cat((ring_j, new_j))
        slot_fresh = torch.cat((ring_j < j0, torch.ones_like(new_j, dtype=torch.bool)))  # old copies of j ≥ j0 are stale

        r = self._raw_start(pos)  # [T_new]
        j_t = _floor_div(r, c)
        slot_mask = (slot_j[None] >= j_t[:, None] - s_max) & (slot_j[None] < j_t[:, None]) \
            & ((slot_j >= 0) & slot_fresh)[None]  # [T_new, Ks]
        raw_mask = (raw_pos[None] >= r[:, None]) & (raw_pos[None] <= pos[:, None]) & (raw_pos >= 0)[None]
        slot_mask, raw_mask = slot_mask[None], raw_mask[None]
        if ctx.attention_mask is not None:  # in decoding: which absolute positions may be attended
            am = ctx.attention_mask
            raw_mask = raw_mask & am.index_select(1, raw_pos.clamp(min=0))[:, None, :]
            slot_tok = (slot_j[:, None] * c + torch.arange(c, device=dev)).clamp(min=0)
            ok = am.index_select(1, slot_tok.flatten()).view(am.shape[0], -1, c).all(-1)
            slot_mask = slot_mask & ok[:, None, :]
        keys = torch.cat((ck_ring, nk, k_ring, k), 2)
        values = torch.cat((cv_ring, nv, v_ring, v), 2)
        mask = torch.cat((slot_mask, raw_mask), 2)
        y = self._attend(q, keys, values, mask[:, None])

        last = pos[-r_len:]
        k_ring = k_ring.index_copy(2, torch.remainder(last, r_len), k[:, :, -r_len:])
        v_ring = v_ring.index_copy(2, torch.remainder(last, r_len), v[:, :, -r_len:])
        pending = pending.index_copy(1, torch.remainder(pos[-c:], c), x[:, -c:])
        w = torch.remainder(new_j[-n_ring:], n_ring)
        ck_ring = ck_ring.index_copy(2, w, nk[:, :, -n_ring:])
        cv_ring = cv_ring.index_copy(2, w, nv[:, :, -n_ring:])
        return self._out(y), (k_ring, v_ring, pending, ck_ring, cv_ring)


@implements("recurrent_memory")
class RecurrentMemory(BodyOp):
    """`recurrent_memory(x, block=body, memory=M, segment=L)`: the Recurrent Memory Transformer
    (Bulatov et al., 2022), decoder form.

    The sequence is cut into segments of L tokens. The body runs on each segment with the memory
    written twice around it, [mem; segment; mem] (L + 2M tokens, positions 0 … L + 2M − 1 of its
    own): the first M read the memory (every segment token sees them), the last M write it — their
    outputs are the memory of the next segment. The first segment reads `memory` [M, d], a learned
    embedding (N(0, 0.02)). Gradients flow through the memory across segments (BPTT, as the paper).

    The last segment is padded to L (padding masked out when the body is not causal), so every
    segment is the same computation. Eager and compiled forwards loop over segments in Python;
    `torch.export` gets a `while_loop` over the segment count, so the exported program keeps the
    length dynamic (a Python loop would bake in the traced length's segment count). Auxiliary losses
    of the body (MoE balance, …) are collected per segment in eager mode; the exported graph
    (inference) leaves them out.

    State for `step`: `memory` [B, M, d] (read by the current segment) and the body's own state for
    L + 2M positions. At the first token of a segment the body state is reset and the read tokens
    are fed; after its last token the write tokens are fed and their outputs become the memory.
    Traced `step`s take these branches with `torch.cond`, so an exported step crosses segment
    boundaries too.
    """

    exported_step_loops_over_tokens = True  # `_traced_step`: one exported graph for every length

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.memory = self.make_parameter("memory")

    @classmethod
    def build(cls, p, in_types, out_type, bctx) -> RecurrentMemory:
        mod = super().build(p, in_types, out_type, bctx)
        mod.body_causal = is_causal(bctx.node.body)
        return mod

    def init_weights(self, init: Init) -> None:
        init.normal_(self.memory)
        self.body.init_weights(init)

    # -- forward -----------------------------------------------------------------------------

    def _segment(self, mem: Tensor, seg: Tensor, seg_valid: Tensor | None, aux: list[Tensor],
                 real: Tensor | int | None = None) -> tuple[Tensor, Tensor]:
        """One segment [B, L, d] with the memory [B, M, d] read before and written after it;
        returns the segment's outputs and the next memory. `real` (< L for the last segment) is
        how many of its tokens are not padding: the written memory takes the positions right after
        them, as in the paper's [M; X_s; M] of a short last segment (what a bidirectional body's
        relative positions see)."""
        m, seg_len = self.params.memory, seg.shape[1]
        mask = None
        if seg_valid is not None:
            ones = seg_valid.new_ones(seg_valid.shape[0], m)
            mask = torch.cat((ones, seg_valid, ones), 1)
        positions = torch.arange(seg_len + 2 * m, device=seg.device)
        if real is not None:
            positions = torch.cat((positions[:m + seg_len], m + real + torch.arange(m, device=seg.device)))
        ctx = Context(positions, mask, aux_losses=aux)
        (out,), _ = self.body.run([torch.cat((mem, seg, mem), 1)], ctx)
        return out[:, m:m + seg_len], out[:, m + seg_len:].contiguous()

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        assert ctx is not None
        seg_len = self.params.segment
        bsz, t, _ = x.shape
        segs = to_blocks(x, 1, seg_len)  # [B, n, L, d]
        n_real = (t + seg_len - 1) // seg_len
        valid = ctx.attention_mask
        if valid is None and not self.body_causal:  # the padding of the last segment must not be seen
            valid = torch.ones(bsz, t, dtype=torch.bool, device=x.device)
        seg_valid = to_blocks(valid, 1, seg_len, value=False) if valid is not None else None
        mem = self.memory[None].expand(bsz, -1, -1).contiguous()
        if torch.compiler.is_exporting():
            return from_blocks(self._segments_while_loop(mem, segs, seg_valid, n_real, t), 1, t)
        ys = []
        for i in range(n_real):
            y, mem = self._segment(mem, segs[:, i], seg_valid[:, i] if seg_valid is not None else None,
                                   ctx.aux_losses, min(seg_len, t - i * seg_len))
            ys.append(y)
        return torch.cat(ys, 1)[:, :t]

    def _segments_while_loop(self, mem: Tensor, segs: Tensor, seg_valid: Tensor | None, n_real: int,
                             t: int) -> Tensor:
        from torch._higher_order_ops.while_loop import while_loop

        def more(i: Tensor, mem: Tensor, out: Tensor) -> Tensor:
            return i < n_real

        def one(i: Tensor, mem: Tensor, out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            at = i.reshape(1)
            sv = seg_valid.index_select(1, at).squeeze(1) if seg_valid is not None else None
            real = (t - i * segs.shape[2]).clamp(max=segs.shape[2])
            y, mem = self._segment(mem, segs.index_select(1, at).squeeze(1), sv, [], real)
            return i + 1, mem, out.index_copy(1, at, y[:, None])

        start = torch.zeros((), dtype=torch.long, device=segs.device)
        _, _, out = while_loop(more, one, (start, mem, torch.zeros_like(segs)))
        return out

    # -- step --------------------------------------------------------------------------------

    def _body_len(self) -> int:
        return self.params.segment + 2 * self.params.memory


    def _body_ctx(self, positions: Tensor, seg_start: Tensor, ctx: Context) -> Context:
        """The body's decoding context: its own positions; an absolute key mask mapped onto them."""
        mask = None
        if ctx.attention_mask is not None:
            am = ctx.attention_mask
            m, seg_len = self.params.memory, self.params.segment
            at = (seg_start + torch.arange(seg_len, device=am.device)).clamp(max=am.shape[1] - 1)
            ones = am.new_ones(am.shape[0], m)
            mask = torch.cat((ones, am.index_select(1, at), ones), 1)
        return Context(positions, mask, aux_losses=[], decoding=True)

    def _read(self, mem: Tensor, seg_start: Tensor, ctx: Context) -> State:
        """A fresh body state with the memory's read tokens fed (positions 0 … M − 1)."""
        fresh = self.body.init_state(mem.shape[0], self._body_len(), mem.device, mem.dtype)
        pos = torch.arange(self.params.memory, device=mem.device)
        return self.body.run([mem], self._body_ctx(pos, seg_start, ctx), fresh)[1]

    def _write(self, mem: Tensor, body_state: State, seg_start: Tensor, ctx: Context) -> Tensor:
        """The next memory: the body's outputs at the write tokens (positions L + M … L + 2M − 1)."""
        m = self.params.memory
        pos = self.params.segment + m + torch.arange(m, device=mem.device)
        return self.body.run([mem], self._body_ctx(pos, seg_start, ctx), body_state)[0][0].contiguous()

    def _piece(self, x: Tensor, start: Tensor, mem: Tensor, body_state: State, ctx: Context) -> tuple[Tensor, State]:
        """Tokens of one segment at body positions M + (start mod L) …"""
        seg_len = self.params.segment
        seg_start = start - torch.remainder(start, seg_len)
        pos = self.params.memory + (start - seg_start) + torch.arange(x.shape[1], device=x.device)
        (y,), body_state = self.body.run([x], self._body_ctx(pos, seg_start, ctx), body_state)
        return y, body_state

    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        seg_len = self.params.segment
        mem, body_state = state[0], tuple(state[1:])
        if torch.compiler.is_compiling() or torch.compiler.is_exporting():
            return self._traced_step(x, mem, body_state, ctx)
        start, end = int(ctx.positions[0]), int(ctx.positions[-1]) + 1
        ys = []
        while start < end:  # pieces that stay within one segment
            stop = min(end, (start // seg_len + 1) * seg_len)
            seg_start = torch.tensor(start - start % seg_len, device=x.device)
            if start % seg_len == 0:
                body_state = self._read(mem, seg_start, ctx)
            piece = x[:, start - int(ctx.positions[0]):stop - int(ctx.positions[0])]
            y, body_state = self._piece(piece, torch.tensor(start, device=x.device), mem, body_state, ctx)
            ys.append(y)
            if stop % seg_len == 0:
                mem = self._write(mem, body_state, seg_start, ctx)
            start = stop
        return torch.cat(ys, 1), (mem, *body_state)

    def _traced_step(self, x: Tensor, mem: Tensor, body_state: State, ctx: Context) -> tuple[Tensor, State]:
        """Token by token, segment boundaries by `torch.cond`: one token as it comes, several in a
        `while_loop` over them under export (a Python loop would bake in the traced length)."""
        if x.shape[1] == 1 or not torch.compiler.is_exporting():
            ys = []
            for i in range(x.shape[1]):
                y, (mem, *body_state) = self._one_token(x[:, i:i + 1], ctx.positions[i], (mem, *body_state), ctx)
                ys.append(y)
            return torch.cat(ys, 1), (mem, *body_state)

        def one(xt: tuple[Tensor, Tensor], carry: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
            y, carry = self._one_token(xt[0][:, None], xt[1][0], carry, ctx)
            return y[:, 0], carry

        positions = ctx.positions[None].expand(x.shape[0], -1)
        carry = tuple(t.contiguous() for t in (mem, *body_state))  # while_loop carries: contiguous
        return exported_time_loop(one, (x, positions), carry, torch.zeros_like(x), dim=1)

    def _one_token(self, x: Tensor, t: Tensor, state: State, ctx: Context) -> tuple[Tensor, State]:
        """x [B, 1, d] at absolute position t: read at a segment's first token, write after its last."""
        seg_len = self.params.segment
        mem, body_state = state[0], tuple(state[1:])
        n = len(body_state)
        seg_start = t - torch.remainder(t, seg_len)
        body_state = tuple(torch.cond(
            torch.remainder(t, seg_len) == 0,
            lambda mem, at, *st: tuple(self._read(mem, at, ctx)),
            lambda mem, at, *st: tuple(s.clone() for s in st),
            (mem, seg_start, *body_state)))
        y, body_state = self._piece(x, t, mem, body_state, ctx)
        mem = torch.cond(
            torch.remainder(t, seg_len) == seg_len - 1,
            lambda mem, at, *st: self._write(mem, st, at, ctx),
            lambda mem, at, *st: mem.clone(),
            (mem, seg_start, *body_state))
        assert len(body_state) == n
        return y, (mem, *body_state)
