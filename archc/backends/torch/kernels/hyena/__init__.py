"""Hyena's long convolution y_t = Σ_{s≤t} h_{t−s} ⊙ v_s + β ⊙ v_t, per channel, with a filter as
long as the sequence: `naive.py` the sum written out (the ground truth), `chunk.py` the FFT form
for training and prefill (O(T log T)), `step.py` new tokens against the stored input history."""

from archc.backends.torch.kernels.hyena.chunk import fft_long_conv
from archc.backends.torch.kernels.hyena.naive import naive_long_conv
from archc.backends.torch.kernels.hyena.step import long_conv_step

__all__ = ["fft_long_conv", "long_conv_step", "naive_long_conv"]
