"""One token of the gated delta rule from a state (decoding): the recurrence itself."""

from __future__ import annotations

from torch import Tensor


def gated_delta_rule_step(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
                          state: Tensor) -> tuple[Tensor, Tensor]:
    """q, k [B, H, K], v [B, H, V], g, β [B, H], state [B, H, K, V] (fp32). Returns (o [B, H, V],
    the new state), without writing into `state` (the old one stays valid for rollback)."""
    s = state * g[..., None, None].exp()
    delta = beta[..., None] * (v - (k[..., None] * s).sum(-2))
    s = s + k[..., None] * delta[..., None, :]
    return (q[..., None] * s).sum(-2), s
