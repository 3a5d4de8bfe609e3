"""Kernels: one folder per recurrence, laid out as flash-linear-attention's `fla/ops/<op>/`:
`naive.py` is the full-sequence reference written as the paper's equations (token by token), the
ground truth every other form is tested against; `chunk.py` the chunked form for training and
prefill; `step.py` one token from a state. A Triton kernel of the same op goes beside them."""
