"""xLSTM's sLSTM cell: its decode step as a Triton kernel (`triton.py`); the reference is the cell
itself, `archc.backends.torch.ops.xlstm.slstm_cell` (a nonlinear recurrence: no chunked form)."""
