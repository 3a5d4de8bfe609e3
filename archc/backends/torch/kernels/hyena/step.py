"""New tokens of Hyena's long convolution against the stored input history: for one token at
position p, y_p = Σ_{s≤p} h_{p−s} ⊙ v_s + β ⊙ v_p, a dot product over the history (O(p) per token,
as attention over a KV cache); several tokens at once take the FFT over the whole history."""

from __future__ import annotations

import torch
from torch import Tensor

from archc.backends.torch.kernels.hyena.chunk import fft_long_conv


def long_conv_step(history: Tensor, v: Tensor, positions: Tensor, h: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """history [B, S, C] (inputs at positions 0 … S−1; zeros where not written), v [B, T, C] the
    new inputs at `positions` [T] (consecutive), h [C, S] (lag 0 first), β [C]. Returns (y [B, T, C]
    in fp32 or wider, the history with v written)."""
    history = history.index_copy(1, positions, v.to(history.dtype))
    if v.shape[1] == 1:  # one token: its lags to every stored position
        lags = positions[0] - torch.arange(history.shape[1], device=v.device)       # [S]
        weights = h.index_select(1, lags.clamp(min=0)) * (lags >= 0).to(h.dtype)  # [C, S]
        wide = torch.promote_types(v.dtype, torch.float32)
        y = torch.einsum("bsc,cs->bc", history.to(wide), weights.to(wide))[:, None] + v.to(wide) * beta.to(wide)
        return y, history
    y = fft_long_conv(history.transpose(1, 2), h, beta).transpose(1, 2)           # every position, then the new ones
    return y.index_select(1, positions), history
