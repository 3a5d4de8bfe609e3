"""RWKV-4's WKV (Peng et al. 2023, eq. 14), max-stabilized: `chunk.py` the chunked form, `step.py`
one token, `naive.py` the recurrence token by token."""

from archc.backends.torch.kernels.wkv4.chunk import WKV_CHUNK, wkv4
from archc.backends.torch.kernels.wkv4.naive import naive_wkv4
from archc.backends.torch.kernels.wkv4.step import wkv4_step

__all__ = ["WKV_CHUNK", "naive_wkv4", "wkv4", "wkv4_step"]
