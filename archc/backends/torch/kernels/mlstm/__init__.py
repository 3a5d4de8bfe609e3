"""xLSTM's mLSTM matrix memory (Beck et al. 2024) with exponential input gates: `chunk.py` the
chunked, max-stabilized form, `step.py` one token, `naive.py` the recurrence token by token."""

from archc.backends.torch.kernels.mlstm.chunk import MLSTM_CHUNK, lower_bound, mlstm_scan
from archc.backends.torch.kernels.mlstm.naive import naive_mlstm
from archc.backends.torch.kernels.mlstm.step import mlstm_step

__all__ = ["MLSTM_CHUNK", "lower_bound", "mlstm_scan", "mlstm_step", "naive_mlstm"]
