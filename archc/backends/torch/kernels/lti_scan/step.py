"""One token of x_t = A x_{t−1} + b u_t, y_t = c·x_t (A [H, N, N], b and c [H, N], x [B, H, N])."""

from __future__ import annotations

from torch import Tensor


def lti_step(a: Tensor, b: Tensor, c: Tensor, u: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """u [B, H] -> (y [B, H], x_t [B, H, N])."""
    x = (a @ x[..., None])[..., 0] + b * u[..., None]
    return (x * c).sum(-1), x
