"""`kernels/hyena/`: the FFT long convolution and the decode step over the stored history against
the causal convolution written out (`naive.py`) in fp64, decoding token by token and in chunks;
gradients; export with a dynamic length (torch's FFT ops)."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

from archc.backends.torch.kernels.hyena import fft_long_conv, long_conv_step, naive_long_conv


def _inputs(t: int = 40, c: int = 5, s: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    d = dict(dtype=torch.float64, generator=g)
    return torch.randn(2, c, t, **d), torch.randn(c, s, **d), torch.randn(c, **d)


def test_fft_form_matches_the_convolution():
    v, h, beta = _inputs()
    torch.testing.assert_close(fft_long_conv(v, h[:, :40], beta), naive_long_conv(v, h, beta))


@pytest.mark.parametrize("chunks", [(1,) * 40, (17, 23), (5, 1, 30, 4)], ids=["tokens", "two", "mixed"])
def test_steps_over_the_history_match_the_convolution(chunks):
    v, h, beta = _inputs()
    history, outs, at = torch.zeros(2, h.shape[1], v.shape[1], dtype=v.dtype), [], 0
    for n in chunks:
        y, history = long_conv_step(history, v[..., at:at + n].transpose(1, 2), torch.arange(at, at + n), h, beta)
        outs.append(y)
        at += n
    torch.testing.assert_close(torch.cat(outs, 1).transpose(1, 2), naive_long_conv(v, h, beta))


def test_fft_form_has_exact_gradients():
    v, h, beta = (x.clone().requires_grad_() for x in _inputs(t=9, c=2, s=9))
    assert torch.autograd.gradcheck(fft_long_conv, (v, h, beta))


class _Conv(torch.nn.Module):
    def forward(self, v, h):
        return fft_long_conv(v, h[:, : v.shape[-1]], h[:, 0])


def test_fft_form_exports_with_a_dynamic_length():
    h = torch.randn(3, 256)
    ep = torch.export.export(_Conv(), (torch.randn(1, 3, 50), h), dynamic_shapes=({2: Dim("T", min=2, max=255)}, None))
    for t in (3, 129):
        v = torch.randn(1, 3, t)
        torch.testing.assert_close(ep.module()(v, h), _Conv()(v, h))
