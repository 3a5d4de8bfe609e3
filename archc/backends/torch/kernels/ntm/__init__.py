"""The Neural Turing Machine's memory (Graves et al. 2014, §3): `naive.py` the paper's equations
location by location (the ground truth), `step.py` one token vectorized over heads and locations,
`chunk.py` the tokens of a sequence (a loop: the update is nonlinear in the memory; a
`while_loop` under `torch.export`)."""

from archc.backends.torch.kernels.ntm.chunk import ntm_scan
from archc.backends.torch.kernels.ntm.naive import naive_ntm
from archc.backends.torch.kernels.ntm.step import NTMHeads, ntm_step, split_interface

__all__ = ["NTMHeads", "naive_ntm", "ntm_scan", "ntm_step", "split_interface"]
