"""The Differentiable Neural Computer's memory (Graves et al. 2016, Methods): `naive.py` the
paper's equations location by location (the ground truth), `step.py` one token vectorized,
`chunk.py` the tokens of a sequence (a loop; a `while_loop` under `torch.export`)."""

from archc.backends.torch.kernels.dnc.chunk import dnc_scan
from archc.backends.torch.kernels.dnc.naive import naive_dnc
from archc.backends.torch.kernels.dnc.step import DNCInterface, dnc_step

__all__ = ["DNCInterface", "dnc_scan", "dnc_step", "naive_dnc"]
