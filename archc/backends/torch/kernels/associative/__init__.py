"""ARMT's associative memory (Rodkin et al. 2024): `naive.py` token by token from the paper's update
rule (the ground truth), `chunk.py` a segment at a time (all its reads, then its write), `step.py`
new tokens against the stored memory and the segment's pending write."""

from archc.backends.torch.kernels.associative.chunk import associative_scan, dpfp
from archc.backends.torch.kernels.associative.naive import naive_associative
from archc.backends.torch.kernels.associative.step import associative_step

__all__ = ["associative_scan", "associative_step", "dpfp", "naive_associative"]
