"""Relative position schemes used inside attention: RoPE, ALiBi and T5's bucketed relative bias.

These are components (`attention(..., pos=rope(theta=1e4))`), not modules of their own; the
attention modules call the functions here. All of them work from absolute positions, so the same
code serves `forward` (positions 0..T-1) and `step` (positions of the cache and the new tokens).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def rope_inv_freq(p, rot_dim: int, device: torch.device | None = None) -> Tensor:
    """Rotation frequencies θ^(-2i/d) for i < d/2 (Su et al., RoFormer eq. 15), with context
    extension: `linear` divides positions by `factor` (Chen et al., position interpolation);
    `ntk` raises the base to θ·factor^(d/(d−2)) (the "NTK-aware" scaling of bloc97, as Code Llama's
    base change), which stretches low frequencies and keeps high ones; `llama3` scales each
    frequency by its wavelength (`_llama3`); `yarn` blends by rotations (`_yarn`)."""
    theta = p["theta"]
    if p["scaling"] == "ntk":
        theta = theta * p["factor"] ** (rot_dim / (rot_dim - 2))
    inv = 1.0 / theta ** (torch.arange(0, rot_dim, 2, device=device, dtype=torch.float32) / rot_dim)
    if p["scaling"] == "linear":
        inv = inv / p["factor"]
    elif p["scaling"] == "llama3":
        inv = _llama3(inv, p)
    elif p["scaling"] == "yarn":
        inv = _yarn(p, rot_dim, device)
    return inv


def _yarn(p, rot_dim: int, device: torch.device | None) -> Tensor:
    """YaRN's "NTK-by-parts" frequencies (Peng et al. 2023, §3.2 eq. 17–18, as transformers'
    `_compute_yarn_parameters`): a frequency that turns more than `beta_fast` times over the
    original context L keeps its value (extrapolation), one that turns fewer than `beta_slow`
    times is divided by `factor` (interpolation), and those between blend linearly in the
    dimension index. The dimension of r rotations is d·ln(L / 2πr) / (2 ln θ)."""
    theta, factor, length = p["theta"], p["factor"], p.get("original_max_len", 8192)

    def dim_of(rotations: float) -> float:
        return rot_dim * math.log(length / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = dim_of(p.get("beta_fast", 32.0)), dim_of(p.get("beta_slow", 1.0))
    if p.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, rot_dim - 1)
    if low == high:
        high += 0.001  # a one-dimension band: a step, not a division by zero
    pos_freqs = theta ** (torch.arange(0, rot_dim, 2, device=device, dtype=torch.float32) / rot_dim)
    ramp = ((torch.arange(rot_dim // 2, device=device, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    keep = 1 - ramp
    return 1.0 / (factor * pos_freqs) * (1 - keep) + 1.0 / pos_freqs * keep


def rope_attention_factor(p) -> float:
    """The factor on cos and sin (1 but for `yarn`, whose attention temperature √(1/t) =
    0.1·ln(factor) + 1 (YaRN eq. 22) is folded into the rotation, as the paper suggests, so the
    attention kernel is unchanged)."""
    if p.get("scaling") != "yarn":
        return 1.0
    if p.get("attention_factor") is not None:
        return float(p["attention_factor"])
    return 0.1 * math.log(p["factor"]) + 1.0 if p["factor"] > 1 else 1.0


def _llama3(inv: Tensor, p) -> Tensor:
    """Llama 3.1's frequency-dependent scaling (Meta's reference `apply_scaling`, as transformers'
    `_compute_llama3_parameters`): frequencies whose wavelength exceeds L / low_freq_factor (L the
    original context length) are divided by `factor`, those shorter than L / high_freq_factor kept,
    and those between blended linearly in L / wavelength."""
    factor, low, high = p["factor"], p.get("low_freq_factor", 1.0), p.get("high_freq_factor", 4.0)
    length = p.get("original_max_len", 8192)
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > length / low, inv / factor, inv)
    smooth = (length / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < length / high) & ~(wavelen > length / low)
    return torch.where(medium, blended, scaled)


def rope_cos_sin(positions: Tensor, inv_freq: Tensor, dtype: torch.dtype,
                 scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """cos/sin tables [T, rot_dim] for positions [T] ([B, 1, T, rot_dim] for per-sequence positions
    [B, T], as mixture-of-depths' routed tokens), computed in fp32 (as transformers), times
    `scale` (`rope_attention_factor`)."""
    freqs = positions.float()[..., None] * inv_freq
    if positions.dim() == 2:
        freqs = freqs[:, None]
    emb = torch.cat((freqs, freqs), dim=-1)
    if scale == 1.0:
        return emb.cos().to(dtype), emb.sin().to(dtype)
    return (emb.cos() * scale).to(dtype), (emb.sin() * scale).to(dtype)


def alibi_slopes(heads: int) -> list[float]:
    """Head slopes 2^(−8i/n) for n the largest power of two ≤ heads; extra heads take the odd
    powers of the next scale (Press et al., ALiBi, and their reference code)."""

    def pow2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    n = 2 ** math.floor(math.log2(heads))
    slopes = pow2(n)
    if n < heads:
        slopes += pow2(2 * n)[0::2][: heads - n]
    return slopes


def alibi_bias(slopes: Tensor, q_pos: Tensor, k_pos: Tensor) -> Tensor:
    """[H, Tq, Tk] bias −slope·|q − k| (for causal attention only k ≤ q survive the mask, so this
    is the paper's −slope·(q − k))."""
    dist = (q_pos[:, None] - k_pos[None, :]).abs().float()
    return -slopes.to(q_pos.device)[:, None, None] * dist


def t5_bucket(rel: Tensor, bidirectional: bool, buckets: int, max_distance: int) -> Tensor:
    """T5's relative-position bucket of rel = key − query (Raffel et al.; transformers'
    `T5Attention._relative_position_bucket`): exact buckets for small distances, log-spaced up to
    `max_distance`; bidirectional attention uses half the buckets per direction."""
    out = torch.zeros_like(rel)
    if bidirectional:
        buckets //= 2
        out = out + (rel > 0).long() * buckets
        n = rel.abs()
    else:
        n = (-rel).clamp(min=0)
    exact = buckets // 2
    large = exact + (torch.log(n.float().clamp(min=1) / exact) / math.log(max_distance / exact)
                     * (buckets - exact)).long()
    large = large.clamp(max=buckets - 1)
    return out + torch.where(n < exact, n, large)


class RelativeBias(nn.Module):
    """T5's learned bias table `weight` [buckets, heads]."""

    def __init__(self, buckets: int, max_distance: int, heads: int, bidirectional: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(buckets, heads))
        self.buckets, self.max_distance, self.bidirectional = buckets, max_distance, bidirectional

    def forward(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        b = t5_bucket(k_pos[None, :] - q_pos[:, None], self.bidirectional, self.buckets, self.max_distance)
        return nn.functional.embedding(b, self.weight).permute(2, 0, 1)
