"""Hyena's long convolution by FFT, as safari's `fftconv`: both signals zero-padded to 2T (so the
circular convolution is the linear one on the first T outputs), multiplied in frequency, O(T log T)
per channel."""

from __future__ import annotations

import torch
from torch import Tensor


def fft_long_conv(v: Tensor, h: Tensor, beta: Tensor) -> Tensor:
    """v [B, C, T], h [C, T] (lag 0 first), β [C]. Returns y [B, C, T] in fp32 or wider: the values
    of `naive_long_conv`."""
    dt = torch.promote_types(v.dtype, torch.float32)
    v, h = v.to(dt), h.to(dt)
    t = v.shape[-1]
    n = 2 * t
    y = torch.fft.irfft(torch.fft.rfft(v, n=n) * torch.fft.rfft(h, n=n), n=n)[..., :t]
    return y + v * beta.to(dt)[:, None]
