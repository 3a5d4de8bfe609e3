"""Kernelized attention: linear attention (Katharopoulos et al., 2020, "Transformers are RNNs") and
Performer's FAVOR+ (Choromanski et al., 2021, "Rethinking Attention with Performers").

Both replace softmax(q·kᵀ) by a feature map product φ(q)·φ(k)ᵀ, so attention is

    y_i = φ(q_i) S_i / φ(q_i) z_i,    S_i = Σ_{j ≤ i} φ(k_j)ᵀ v_j,   z_i = Σ_{j ≤ i} φ(k_j)

(all j for the bidirectional form). The normalizer z rides along as an extra column of ones on v.

Three forms compute the same thing:

* bidirectional: S = φ(K)ᵀ[V 1] once, O(T·m·hd);
* causal, parallel and chunked (as flash-linear-attention's chunk kernels): the sequence is cut
  into chunks of C tokens; inside a chunk the masked product (φ(Q)φ(K)ᵀ ⊙ tril)V, across chunks the
  state at each chunk's start from an exclusive cumulative sum of per-chunk states. Chunks are a
  tensor axis, so exported programs keep a dynamic length. An initial state makes the same
  function the multi-token `step`;
* recurrent `step`: the state (S, z) of the prefix, updated by the new tokens.

Features and states are kept in fp32 whatever the model's dtype (the sums grow with T).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from archc.backends.torch.blocks import from_blocks, to_blocks
from archc.backends.torch.context import Context
from archc.backends.torch.init import Init
from archc.backends.torch.module import State
from archc.backends.torch.ops.attention import AttentionCore
from archc.backends.torch.registry import implements

#: Chunk length of the causal parallel form.
CHUNK = 64
#: Lower bound on the normalizer φ(q)·z (relu features can make it zero).
EPS = 1e-6


def causal_linear_attention(fq: Tensor, fk: Tensor, v: Tensor, state: Tensor | None = None,
                            chunk: int = CHUNK) -> tuple[Tensor, Tensor]:
    """Σ_{j ≤ i} (φq_i·φk_j) v_j for every i, plus the final state.

    fq, fk: [B, H, T, m] features; v: [B, H, T, e]; state: [B, H, m, e] of the tokens before
    (None: zeros). Returns (out [B, H, T, e], final state [B, H, m, e]).
    """
    t = fq.shape[2]
    qc, kc, vc = (to_blocks(x, 2, chunk) for x in (fq, fk, v))  # [B, H, n, C, ·]
    per_chunk = kc.transpose(-1, -2) @ vc  # [B, H, n, m, e]
    through = per_chunk.cumsum(dim=2)
    before = through - per_chunk  # state at each chunk's start (exclusive prefix sum)
    if state is not None:
        before = before + state[:, :, None]
    tril = torch.ones(chunk, chunk, dtype=torch.bool, device=fq.device).tril()
    intra = ((qc @ kc.transpose(-1, -2)).masked_fill(~tril, 0.0)) @ vc
    out = from_blocks(qc @ before + intra, 2, t)
    final = through[:, :, -1] if state is None else through[:, :, -1] + state
    return out, final


class _KernelAttention(AttentionCore):
    """q/k/v/o projections as softmax attention; subclasses define the feature map φ (width m).

    State for `step`: `kv` [B, H, m, head_dim] = S and `normalizer` [B, H, m] = z, in fp32.
    """


    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.causal = p.causal

    #: Width m of φ's output (set by each subclass).
    feature_dim: int
    #: φ applied to q (is_query=True) or k [B, H, T, head_dim] -> [B, H, T, m] (each subclass's own).
    features: Callable[[Tensor, bool], Tensor]

    def _fqkv(self, x: Tensor, ctx: Context) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = self.qkv(x, x, None)
        fq, fk = self.features(q.float(), True), self.features(k.float(), False)
        v1 = F.pad(v.float(), (0, 1), value=1.0)  # the ones column carries the normalizer
        if ctx.attention_mask is not None:  # padded keys add nothing to S or z
            keep = ctx.attention_mask[:, None, :, None].to(fk.dtype)
            fk, v1 = fk * keep, v1 * keep
        return fq, fk, v1

    def _finish(self, num_den: Tensor, dtype: torch.dtype) -> Tensor:
        y = num_den[..., :-1] / num_den[..., -1:].clamp_min(EPS)
        return self.out(y.to(dtype))

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        assert ctx is not None
        fq, fk, v1 = self._fqkv(x, ctx)
        if self.causal:
            out, _ = causal_linear_attention(fq, fk, v1)
        else:
            out = fq @ (fk.transpose(-1, -2) @ v1)
        return self._finish(out, x.dtype)


    def step(self, x: Tensor, *, state: State, ctx: Context) -> tuple[Tensor, State]:
        fq, fk, v1 = self._fqkv(x, ctx)
        s = torch.cat((state[0], state[1][..., None]), dim=-1)
        kernel = self.triton_kernels.get("recurrent_step")
        if x.shape[1] == 1 and kernel is not None and not torch.is_grad_enabled():  # decoding: one launch
            no_decay = torch.zeros(fk.shape[:2], dtype=torch.float32, device=fk.device)
            out, s = kernel(fq[:, :, 0], fk[:, :, 0], v1[:, :, 0], no_decay, s)
            out = out[:, :, None]
        elif x.shape[1] == 1:  # one token: the plain recurrence
            s = s + fk.transpose(-1, -2) @ v1
            out = fq @ s
        else:
            out, s = causal_linear_attention(fq, fk, v1, s)
        return self._finish(out, x.dtype), (s[..., :-1], s[..., -1])


@implements("linear_attention")
class LinearAttention(_KernelAttention):
    """`linear_attention(x, heads, feature_map="elu"|"relu", causal)`: φ(x) = elu(x) + 1 (the
    paper's choice) or relu(x), applied per head to q and k (m = head_dim)."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.feature_map = p.feature_map
        self.feature_dim = self.head_dim

    def features(self, x: Tensor, is_query: bool) -> Tensor:  # type: ignore[override]
        return F.elu(x) + 1.0 if self.feature_map == "elu" else F.relu(x)


def orthogonal_gaussian(m: int, d: int, init: Init) -> Tensor:
    """[m, d] random features ω: blocks of d orthonormal rows (QR of a Gaussian matrix), each row
    rescaled to the norm of an independent d-dim Gaussian vector, so every row is marginally
    N(0, I_d) while rows within a block are exactly orthogonal (Performer §2.4, "ORFs")."""
    blocks = []
    for _ in range(math.ceil(m / d)):
        q, _ = torch.linalg.qr(init.randn(d, d))
        blocks.append(q.T)
    w = torch.cat(blocks)[:m]
    norms = init.randn(m, d).norm(dim=1, keepdim=True)
    return w * norms


@implements("performer_attention")
class PerformerAttention(_KernelAttention):
    """`performer_attention(x, heads, features=m, causal)`: FAVOR+ positive random features

        φ(x) = exp(ω x' − |x'|²/2) / √m,    x' = x / head_dim^(1/4),

    with E[φ(q)·φ(k)] = exp(q·k / √head_dim), the softmax kernel (Performer Lemma 1). ω [m, hd] is
    a buffer `omega` shared by the heads, drawn orthogonal at init from the init seed and saved with
    the weights (it is not redrawn during training). For queries the row maximum of ω x' is
    subtracted first — a per-query constant factor, which cancels between S and z."""

    def __init__(self, p, in_types, out_type) -> None:
        super().__init__(p, in_types, out_type)
        self.m = self.feature_dim = p.features
        self.register_buffer("omega", torch.empty(self.declared("omega").shape))

    def init_weights(self, init: Init) -> None:
        super().init_weights(init)
        with torch.no_grad():
            self.omega.copy_(orthogonal_gaussian(self.m, self.head_dim, init))

    def features(self, x: Tensor, is_query: bool) -> Tensor:  # type: ignore[override]
        x = x * self.head_dim ** -0.25
        proj = x @ self.omega.float().T  # [B, H, T, m]
        logits = proj - (x * x).sum(-1, keepdim=True) / 2
        if is_query:
            logits = logits - proj.amax(-1, keepdim=True).detach()
        return logits.exp() / math.sqrt(self.m)
