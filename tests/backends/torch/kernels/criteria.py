"""flash-linear-attention's kernel criterion, shared by the Triton kernel tests: the relative RMS
error of a result against its reference (`get_err_ratio`), and the bounds the issue states."""

from __future__ import annotations

import torch

#: relative RMS error bounds: fp32 (rounding only), and bf16 forward / input gradients
FP32, BF16_FORWARD, BF16_GRAD = 1e-6, 0.005, 0.008


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp_min(1e-12))
