"""Mamba's selective scan (Gu & Dao 2023, Alg. 2): `chunk.py` the chunked scan, `naive.py` the
recurrence token by token."""

from archc.backends.torch.kernels.selective_scan.chunk import selective_chunk, selective_scan
from archc.backends.torch.kernels.selective_scan.naive import naive_selective_scan

__all__ = ["naive_selective_scan", "selective_chunk", "selective_scan"]
