"""The scalar-decay linear recurrence of Mamba-2 (SSD) and RetNet: `chunk.py` the chunked dual form
(Dao & Gu 2024, Listing 1), `naive.py` the recurrence token by token."""

from archc.backends.torch.kernels.ssd.chunk import chunked_decay_attention
from archc.backends.torch.kernels.ssd.naive import naive_decay_attention

__all__ = ["chunked_decay_attention", "naive_decay_attention"]
