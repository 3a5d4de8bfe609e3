"""RWKV-6's WKV (Peng et al. 2024, eq. 18-19): `chunk.py` chunks with exact pairwise decays, `step.py`
one token, `naive.py` the recurrence token by token."""

from archc.backends.torch.kernels.wkv6.chunk import WKV6_CHUNK, wkv6
from archc.backends.torch.kernels.wkv6.naive import naive_wkv6
from archc.backends.torch.kernels.wkv6.step import wkv6_step

__all__ = ["WKV6_CHUNK", "naive_wkv6", "wkv6", "wkv6_step"]
