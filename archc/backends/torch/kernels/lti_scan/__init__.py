"""A linear time-invariant state-space model with a dense transition in real coordinates,
x_t = A x_{t−1} + b u_t, y_t = c·x_t per channel: S4's and S4D's exported form (`chunk.py`: blocks
of `LTI_BLOCK` tokens, a `while_loop` over blocks), `step.py` one token, `naive.py` token by token.
Real arithmetic throughout: torch's ONNX exporter has no complex `exp`, `expm1`, `mul` or `einsum`."""

from archc.backends.torch.kernels.lti_scan.chunk import LTI_BLOCK, lti_scan
from archc.backends.torch.kernels.lti_scan.naive import naive_lti_scan
from archc.backends.torch.kernels.lti_scan.step import lti_step

__all__ = ["LTI_BLOCK", "lti_scan", "lti_step", "naive_lti_scan"]
