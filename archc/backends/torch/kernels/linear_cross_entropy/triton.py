"""The fused linear + cross-entropy (Liger-Kernel's FusedLinearCrossEntropy): the head's matmul and
its loss over a chunk of rows at a time, so the [tokens, vocab] logits are never formed whole. Each
chunk's logits are a PyTorch matmul; the Triton kernel (`templates/cross_entropy.py.jinja`, rendered
per vocabulary and soft cap) turns them into the rows' losses and, in place, their gradient; two
more matmuls take that gradient to the hidden states and the weight. The gradients are computed in
the forward pass and scaled by the loss's gradient in the backward (`archc::linear_cross_entropy`,
registered with `torch.library` with its autograd and fake implementations).

Memory: one chunk of logits (about the size of the hidden states) instead of the whole [N, V]
logits, their fp32 copy for the loss and its gradient — the saving that grows with the vocabulary.
Tested against `naive.py` (tests/backends/torch/kernels/test_linear_cross_entropy.py)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.library import triton_op, wrap_triton

from archc.backends.torch.kernels.linear_cross_entropy.specialize import chunk_rows, params
from archc.backends.triton.render import render


@triton_op("archc::linear_cross_entropy", mutates_args=())
def _linear_cross_entropy(hidden: Tensor, weight: Tensor, bias: Tensor | None, labels: Tensor, ignore_index: int,
                          softcap: float, grad: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    rows, width = hidden.shape
    vocab = weight.shape[0]
    kernel = render("cross_entropy", **params(vocab, softcap or None)).module
    losses = torch.empty(rows, dtype=torch.float32, device=hidden.device)
    d_hidden = torch.zeros_like(hidden) if grad else hidden.new_empty(0)
    d_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if grad else weight.new_empty(0)
    d_bias = (torch.zeros(vocab, dtype=torch.float32, device=weight.device) if grad and bias is not None
              else weight.new_empty(0))
    step = chunk_rows(rows, vocab, width)
    for start in range(0, rows, step):
        h = hidden[start:start + step]
        logits = (h @ weight.t() if bias is None else torch.addmm(bias, h, weight.t())).float().contiguous()
        wrap_triton(kernel.cross_entropy)[(h.shape[0],)](logits, labels[start:start + step].contiguous(),
                                                          losses[start:start + step], 1.0, ignore_index, GRAD=grad)
        if grad:  # the logits now hold their gradient
            d_hidden[start:start + step] = (logits.to(weight.dtype) @ weight).to(hidden.dtype)
            d_weight.addmm_(logits.t(), h.float())
            if bias is not None:
                d_bias += logits.sum(0)
    return losses.sum(), d_hidden, d_weight.to(weight.dtype) if grad else d_weight, \
        d_bias.to(weight.dtype) if d_bias.numel() else d_bias


@_linear_cross_entropy.register_fake
def _(hidden: Tensor, weight: Tensor, bias: Tensor | None, labels: Tensor, ignore_index: int, softcap: float,
      grad: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return (hidden.new_empty((), dtype=torch.float32), torch.empty_like(hidden) if grad else hidden.new_empty(0),
            torch.empty_like(weight) if grad else weight.new_empty(0),
            weight.new_empty(weight.shape[0]) if grad and bias is not None else weight.new_empty(0))


def _setup(ctx: Any, inputs: tuple, output: tuple) -> None:
    _, d_hidden, d_weight, d_bias = output
    ctx.has_bias = inputs[2] is not None
    ctx.save_for_backward(d_hidden, d_weight, d_bias)


def _backward(ctx: Any, d_loss: Tensor, *_: Any) -> tuple:
    d_hidden, d_weight, d_bias = ctx.saved_tensors
    if not torch.equal(d_loss, torch.ones_like(d_loss)):  # the loss scaled (a mean, accumulation): copies
        d_hidden, d_weight, d_bias = d_loss * d_hidden, d_loss * d_weight, d_loss * d_bias
    return (d_hidden, d_weight, d_bias if ctx.has_bias else None, None, None, None, None)


_linear_cross_entropy.register_autograd(_backward, setup_context=_setup)


def triton_linear_cross_entropy(hidden: Tensor, weight: Tensor, bias: Tensor | None, labels: Tensor,
                                ignore_index: int = -100, softcap: float | None = None) -> Tensor:
    """`naive.naive_linear_cross_entropy`'s contract (the summed loss over rows whose label is not
    `ignore_index`), without forming the logits whole. hidden [N, d], weight [V, d], labels [N]."""
    grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad
                                        or (bias is not None and bias.requires_grad))
    return _linear_cross_entropy(hidden, weight, bias, labels, ignore_index, float(softcap or 0.0), grad)[0]
